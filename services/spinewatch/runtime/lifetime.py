"""Process-wide settings of worker processes: lifetime and garbage collection."""

from __future__ import annotations

import ctypes
import gc
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM) -> None:  # pragma: no cover - in the child
    """Ask Linux to signal this process when its parent exits, even by SIGKILL."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signum)


def tune_gc(young_threshold: int) -> None:
    """Collect the youngest generation less often.

    A bulk batch allocates tens of thousands of short-lived objects
    (validated events, facts); at CPython's default threshold (700) the
    collector runs every few events and measured ~40% of ingest time on the
    benchmark. Objects alive at start-up (modules, the baseline catalog) are
    moved out of the collector's sight for the same reason.
    """
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)
