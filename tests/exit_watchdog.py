"""The test run ends within seconds of its summary, or fails loudly.

After pytest is done, the interpreter still waits for every non-daemon
thread and runs its atexit hooks; one that never returns (a faust consumer
thread reconnecting to a broker that is gone) kept a finished run alive for
5.5 minutes. This watchdog, armed when pytest unconfigures, gives the
process GRACE_S to exit; if it is still alive then, it prints every
thread's stack and exits with EXIT_STATUS, so a hang becomes a failure
that shows where it hung.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time

import pytest

PLUGIN_NAME = "spinewatch-exit-watchdog"
# Not scaled by SPINEWATCH_TEST_SLOWDOWN: a healthy exit takes well under a
# second even on a loaded machine, and the promise is "within 10 s".
GRACE_S = 5.0
# Distinct from pytest's own exit codes (0-5), so a hang is told apart.
EXIT_STATUS = 70

_first_config: pytest.Config | None = None


class ExitWatchdog:
    def pytest_configure(self, config: pytest.Config) -> None:
        global _first_config  # noqa: PLW0603 - one watchdog per process
        if _first_config is None:
            _first_config = config

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # Only the outermost run ends the process: an in-process nested run
        # (pytester's runpytest) returns to its caller instead. Nor does an
        # xdist worker (`workerinput`): it finishes its share of the files and
        # then waits, alive, for the controller to end it, which can be
        # minutes while the other worker runs (the watchdog fired there, at
        # 5 s, in a passing run). The controller's own watchdog still guards
        # the run's exit, and xdist kills a worker still alive 10 s after it
        # was told to stop (`NodeManager.EXIT_TIMEOUT`); the session guard
        # runs in every worker, so a leaked client or thread still fails.
        if config is _first_config and not hasattr(config, "workerinput"):
            threading.Thread(target=_bark, name="exit-watchdog", daemon=True).start()


def _bark() -> None:
    time.sleep(GRACE_S)
    stream = sys.__stderr__ or sys.stderr
    alive = [t for t in threading.enumerate() if t is not threading.current_thread()]
    names = "\n".join(
        f"  {t.name!r} (Thread 0x{t.ident or 0:016x}, {'daemon' if t.daemon else 'NON-DAEMON'})"
        for t in alive
    )
    stream.write(
        f"\nspinewatch exit watchdog: the interpreter is still alive {GRACE_S:g} s after "
        f"pytest finished; something keeps it from exiting. Threads:\n{names}\n"
        f"Their stacks (most recent call first):\n"
    )
    stream.flush()
    faulthandler.dump_traceback(file=stream, all_threads=True)
    stream.write(f"spinewatch exit watchdog: exiting with status {EXIT_STATUS}\n")
    stream.flush()
    os._exit(EXIT_STATUS)
