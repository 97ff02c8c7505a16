"""The session guard and the exit watchdog, each on a generated test session.

Every test writes a tiny test file and runs pytest on it in a child process
with this project's conftest (`-p tests.conftest`) and pytest configuration,
then reads what that session printed, how it ended, and when.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.exit_watchdog import EXIT_STATUS, GRACE_S
from tests.support import scaled

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"^=*\s*\d+ (passed|failed|error|errors)\b.* in [\d.]+s")


@dataclass
class Session:
    status: int
    output: str
    after_summary_s: float  # from the summary line to the process's exit


def _run_session(tmp_path: Path, source: str) -> Session:
    test_file = tmp_path / "test_generated.py"
    test_file.write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if k != "SPINEWATCH_KAFKA_BROKERS"}
    command = [
        sys.executable, "-m", "pytest", "-p", "tests.conftest", "-c", str(ROOT / "pyproject.toml"),
        "--rootdir", str(ROOT), "-p", "no:cacheprovider", "-q", str(test_file),
    ]  # fmt: skip
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as child:

        def read() -> None:
            assert child.stdout is not None
            lines.extend((time.monotonic(), line) for line in child.stdout)

        reader = threading.Thread(target=read, name="generated-session-output", daemon=True)
        reader.start()
        try:
            child.wait(timeout=scaled(90))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            reader.join(scaled(5))
            output = "".join(line for _, line in lines)
            pytest.fail(f"the generated session did not exit:\n{output[-4000:]}")
        exited = time.monotonic()
        reader.join(scaled(5))
    output = "".join(line for _, line in lines)
    summaries = [at for at, line in lines if SUMMARY.match(line)]
    assert summaries, f"no summary line in:\n{output[-4000:]}"
    return Session(child.returncode, output, exited - summaries[-1])


@pytest.mark.e2e
def test_a_client_never_closed_fails_the_session_naming_it(tmp_path: Path) -> None:
    session = _run_session(
        tmp_path,
        """
        from aiokafka import AIOKafkaProducer

        LEFT = []

        async def test_leaves_a_producer_open(kafka_bootstrap):
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
            await producer.start()
            LEFT.append(producer)  # never stopped
        """,
    )
    assert session.status == 1, session.output
    assert "ERROR at teardown of test_leaves_a_producer_open" in session.output
    assert "spinewatch session guard: 1 leftover(s)" in session.output
    assert "was never closed" in session.output
    assert "created during ::test_leaves_a_producer_open" in session.output
    assert "producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)" in session.output
    assert "exit watchdog" not in session.output  # nothing else kept it alive
    assert session.after_summary_s < scaled(GRACE_S)


@pytest.mark.e2e
def test_a_client_running_in_a_thread_fails_the_session_and_exits_promptly(
    tmp_path: Path,
) -> None:
    # What faust's consumer thread did when its worker was abandoned.
    session = _run_session(
        tmp_path,
        """
        import asyncio
        import threading

        from aiokafka import AIOKafkaConsumer

        def test_leaves_a_consumer_running(kafka_bootstrap):
            ready = threading.Event()

            async def consume_forever():
                consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
                await consumer.start()
                ready.set()
                await asyncio.Event().wait()

            threading.Thread(
                target=asyncio.run, args=(consume_forever(),), name="leaky-consumer"
            ).start()
            assert ready.wait(30)
        """,
    )
    assert "spinewatch session guard: 2 leftover(s)" in session.output, session.output
    assert "was never closed (metadata task still running; its event loop is still running)" in (
        session.output
    )
    assert "consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)" in session.output
    assert (
        "non-daemon thread 'leaky-consumer' still alive (the interpreter waits for it at exit);"
        " first seen during ::test_leaves_a_consumer_running" in session.output
    )
    # The thread would keep the process alive for good: the watchdog ends it.
    assert session.status == EXIT_STATUS
    assert session.after_summary_s < scaled(10)


@pytest.mark.e2e
def test_a_clean_session_passes_the_guard(tmp_path: Path) -> None:
    session = _run_session(
        tmp_path,
        """
        from tests.support import consume, produce

        async def test_round_trip(kafka_bootstrap):
            assert await produce(kafka_bootstrap, "guard-check", [b"one", b"two"]) == 2
            assert len(await consume(kafka_bootstrap, "guard-check", 2)) == 2
        """,
    )
    assert session.status == 0, session.output
    assert "1 passed" in session.output
    assert "leftover" not in session.output
    assert session.after_summary_s < scaled(GRACE_S)


def test_a_thread_that_never_ends_is_dumped_and_the_run_exits_within_10_s(
    tmp_path: Path,
) -> None:
    session = _run_session(
        tmp_path,
        """
        import threading

        def wait_forever():
            threading.Event().wait()

        def test_starts_a_thread_that_never_ends():
            threading.Thread(target=wait_forever, name="never-ends").start()
        """,
    )
    assert "1 passed" in session.output
    assert session.status == EXIT_STATUS, session.output
    assert "spinewatch exit watchdog: the interpreter is still alive" in session.output
    assert re.search(r"'never-ends' \(Thread 0x[0-9a-f]+, NON-DAEMON\)", session.output)
    # faulthandler's dump shows where the thread waits, by file and function.
    assert re.search(r'File "[^"]*test_generated.py", line \d+ in wait_forever', session.output)
    assert session.after_summary_s < scaled(10)
