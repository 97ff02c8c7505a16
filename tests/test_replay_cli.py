"""`spinewatch replay` as a command: usage and input errors, settings, exit codes.

Nothing here reaches a broker: every case stops before anything is sent
(exit 2), or finds no broker at the address given (exit 3). The replay
itself, interrupted and resumed, is in tests/test_replay_e2e.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spinewatch.cli.main import main
from spinewatch.devservers.tansu import free_port
from tests.samples import sample_messages

# --- the command: usage and input errors exit 2 before anything is sent -------------------


def test_usage_and_input_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.delenv("SPINEWATCH_REPLAY_TOKEN", raising=False)
    path = tmp_path / "events.jsonl"
    path.write_bytes(sample_messages()[0] + b"\n")
    unreachable = f"127.0.0.1:{_closed_port()}"

    assert main(["replay", str(path), "--to", "kafka"]) == 2
    assert "--brokers" in capsys.readouterr().err
    assert main(["replay", str(path), "--to", "gateway", "--url", "http://127.0.0.1:1"]) == 2
    assert "needs a token" in capsys.readouterr().err
    assert (
        main(["replay", str(tmp_path / "absent.jsonl"), "--to", "kafka", "--brokers", "x:1"]) == 2
    )
    assert "no such file" in capsys.readouterr().err
    bad_csv = tmp_path / "export.csv"
    bad_csv.write_text("event_type,patient_name\n")
    assert main(["replay", str(bad_csv), "--to", "kafka", "--brokers", unreachable]) == 2
    assert "header column 2" in capsys.readouterr().err

    # No broker at that address: exit 3, and the state is kept for the same command.
    assert main(["replay", str(path), "--to", "kafka", "--brokers", unreachable, "--quiet"]) == 3
    assert "no broker answered" in capsys.readouterr().err
    # Nothing was sent, so no state: the command may go anywhere next time.
    assert not (tmp_path / "events.jsonl.replay-state.json").exists()
    assert (tmp_path / "events.jsonl.rejects.jsonl").read_bytes() == b""
    elsewhere = ["--app-id", "another", "--quiet"]
    assert main(["replay", str(path), "--to", "kafka", "--brokers", unreachable, *elsewhere]) == 3
    capsys.readouterr()
    monkeypatch.setenv("SPINEWATCH_REPLAY_TOKN", "x")
    assert main(["replay", str(path), "--to", "kafka", "--brokers", unreachable]) == 2
    assert "SPINEWATCH_REPLAY_TOKEN" in capsys.readouterr().err  # the closest setting


def _closed_port() -> int:
    return free_port()  # nothing listens there


def test_the_replays_variables_do_not_stop_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """One shell may run a worker and a replay: each namespace is checked by its owner."""
    from spinewatch.engine.settings import Settings  # noqa: PLC0415
    from spinewatch.replay.settings import ReplaySettings  # noqa: PLC0415

    for name in list(os.environ):
        if name.upper().startswith("SPINEWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SPINEWATCH_REPLAY_TOKEN", "swt_x")
    monkeypatch.setenv("SPINEWATCH_GATEWAY_KAFKA_BROKERS", "127.0.0.1:9")
    assert Settings().app_id == "spinewatch"
    assert ReplaySettings().token is not None


def test_kafka_security_comes_from_the_replays_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from spinewatch.replay.settings import ReplaySettings  # noqa: PLC0415

    password = "replay-secret-4711"  # noqa: S105 - a test credential, never echoed
    path = tmp_path / "events.jsonl"
    path.write_bytes(sample_messages()[0] + b"\n")
    unreachable = f"127.0.0.1:{_closed_port()}"
    for name in list(os.environ):
        if name.upper().startswith("SPINEWATCH_REPLAY_"):
            monkeypatch.delenv(name)

    monkeypatch.setenv("SPINEWATCH_REPLAY_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    assert main(["replay", str(path), "--to", "kafka", "--brokers", unreachable]) == 2
    assert "needs kafka_sasl_mechanism" in capsys.readouterr().err

    monkeypatch.setenv("SPINEWATCH_REPLAY_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("SPINEWATCH_REPLAY_KAFKA_SASL_USERNAME", "replay")
    monkeypatch.setenv("SPINEWATCH_REPLAY_KAFKA_SASL_PASSWORD", password)
    given = ReplaySettings().kafka_security.aiokafka_kwargs()
    assert (given["security_protocol"], given["sasl_plain_username"]) == (
        "SASL_PLAINTEXT",
        "replay",
    )
    assert main(["replay", str(path), "--to", "kafka", "--brokers", unreachable, "--quiet"]) == 3
    err = capsys.readouterr().err
    assert "in clear" in err  # SASL/PLAIN without TLS is named as a risk
    assert password not in err
