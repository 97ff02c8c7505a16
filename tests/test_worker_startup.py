"""`spinewatch worker` and `spinewatch alerting` as real processes: bad start-up fails loudly.

Each run gets an environment without the caller's SPINEWATCH_* variables,
so only what the test sets is seen. Every refusal must come before
anything starts, so each process is given a deadline it can only meet by
exiting on its own: a worker that went on to serve would never exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spinewatch.devservers.tansu import free_port
from spinewatch.engine.settings import Settings
from tests.workers import WorkerProcess

MARKER = "marker-value-4711"  # must never appear in an error
DEADLINE_S = 60.0  # generous for a loaded 2-core machine; a refusal takes ~2 s


def run_cli(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SPINEWATCH_")}
    # A port of its own, so a worker that wrongly started would not collide.
    env |= {"SPINEWATCH_METRICS_PORT": str(free_port()), **variables}
    return subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "spinewatch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


def test_worker_with_a_typo_variable_exits_2_naming_it_and_the_fix() -> None:
    done = run_cli("worker", SPINEWATCH_KAFKA_BROKERS="127.0.0.1:9", SPINEWATCH_APPID=MARKER)
    assert done.returncode == 2, done.stderr
    assert "unknown setting SPINEWATCH_APPID (did you mean SPINEWATCH_APP_ID?)" in done.stderr
    assert MARKER not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_worker_with_an_invalid_value_exits_2_without_echoing_it() -> None:
    done = run_cli("worker", SPINEWATCH_KAFKA_BROKERS="127.0.0.1:9", SPINEWATCH_PARTITIONS=MARKER)
    assert done.returncode == 2, done.stderr
    assert "SPINEWATCH_PARTITIONS (partitions)" in done.stderr
    assert MARKER not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_alerting_with_a_typo_variable_exits_2_naming_it_and_the_fix() -> None:
    done = run_cli(
        "alerting",
        SPINEWATCH_ALERTING_KAFKA_BROKERS="127.0.0.1:9",
        SPINEWATCH_ALERTING_WEBHOOK_URL=MARKER,
    )
    assert done.returncode == 2, done.stderr
    assert (
        "unknown setting SPINEWATCH_ALERTING_WEBHOOK_URL "
        "(did you mean SPINEWATCH_ALERTING_WEBHOOK_URLS?)"
    ) in done.stderr
    assert MARKER not in done.stderr + done.stdout


def test_without_a_signing_key_neither_service_starts_against_real_brokers(
    tmp_path: Path,
) -> None:
    """Unsigned internal topics would let any topic writer page staff (issue 17)."""
    worker = run_cli("worker", SPINEWATCH_KAFKA_BROKERS="127.0.0.1:9")
    alerting = run_cli("alerting", SPINEWATCH_ALERTING_KAFKA_BROKERS="127.0.0.1:9")
    short = run_cli("worker", SPINEWATCH_KAFKA_BROKERS="127.0.0.1:9", SPINEWATCH_SIGNING_KEY=MARKER)
    unreadable = run_cli(
        "alerting",
        SPINEWATCH_ALERTING_KAFKA_BROKERS="127.0.0.1:9",
        SPINEWATCH_ALERTING_SIGNING_KEY=MARKER * 2,
        SPINEWATCH_ALERTING_CREDENTIALS_FILE=str(tmp_path / "missing.toml"),
    )
    for done in (worker, alerting, short, unreadable):
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""  # nothing started
        assert "Traceback" not in done.stderr
        assert MARKER not in done.stderr
    assert "SPINEWATCH_SIGNING_KEY" in worker.stderr
    assert "SPINEWATCH_ALERTING_SIGNING_KEY" in alerting.stderr
    assert "SPINEWATCH_SIGNING_KEY (signing_key)" in short.stderr
    assert "at least 32 bytes" in short.stderr
    assert "missing.toml: cannot be read" in unreadable.stderr


def test_worker_without_brokers_refuses_and_names_both_ways_out() -> None:
    began = time.monotonic()
    done = run_cli("worker")
    assert done.returncode == 2, done.stderr
    assert "no Kafka broker configured" in done.stderr
    for way_out in ("SPINEWATCH_KAFKA_BROKERS=", "--embedded-broker", "SPINEWATCH_EMBEDDED_BROKER"):
        assert way_out in done.stderr
    assert done.stdout == ""  # the start-up line never came: nothing was started
    assert "Traceback" not in done.stderr
    assert time.monotonic() - began < DEADLINE_S


def test_brokers_and_the_embedded_broker_together_are_a_settings_error() -> None:
    flag = run_cli("worker", "--embedded-broker", SPINEWATCH_KAFKA_BROKERS="127.0.0.1:9")
    variable = run_cli(
        "worker", SPINEWATCH_KAFKA_BROKERS="127.0.0.1:9", SPINEWATCH_EMBEDDED_BROKER="true"
    )
    for done in (flag, variable):
        assert done.returncode == 2, done.stderr
        assert "set either kafka_brokers or embedded_broker, not both" in done.stderr


async def test_worker_asked_for_the_embedded_broker_starts_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The variable route (the flag reaches the same setting, see above).
    monkeypatch.delenv("SPINEWATCH_KAFKA_BROKERS", raising=False)
    settings = Settings(embedded_broker=True, data_dir=tmp_path, session_timeout_s=3.0)
    worker = WorkerProcess(settings)
    worker.start()
    try:
        assert await worker.wait_for_partitions(timeout_s=90)
    finally:
        worker.stop()
    assert worker.process is not None
    assert worker.process.returncode == 0
