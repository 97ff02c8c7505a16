"""What a worker's start-up cost, said in one line when it is ready.

Issue 20 asks for a worker ready in under 5 s after a restart; it took
15-33 s, importing SciPy and designing every drift chart at each start.
The line names where the seconds went (topics, drift designs and how many
were calibrated rather than read from the cache, the consumer group join
with the state recovery) and which heavy modules the start-up loaded: none
when the design cache is warm (tests/test_startup_path.py holds it).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("spinewatch.engine.bootstrap")

# Never needed before a worker is ready when its designs are cached: SciPy and
# numpy (designs, funnels: imported where used), the report's matplotlib and
# playwright (never in a worker). Named in the ready line when loaded anyway.
HEAVY_MODULES = ("scipy", "numpy", "matplotlib", "playwright", "pandas")


def log_ready(began: float, topics_at: float, designed_at: float, calibrations: int) -> None:
    """One line: where the start-up's seconds went, and which heavy modules it loaded."""
    now = time.monotonic()
    age = process_age_s()
    loaded = [name for name in HEAVY_MODULES if name in sys.modules]
    log.info(
        "worker ready %s: topics %.2f s, drift designs %.2f s (%d calibrated), "
        "group join and recovery %.2f s; heavy modules loaded: %s",
        f"{age:.2f} s after the process started" if age is not None else "",
        topics_at - began,
        designed_at - topics_at,
        calibrations,
        now - designed_at,
        ", ".join(loaded) or "none",
    )


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere)."""
    try:
        # Field 22 (starttime, clock ticks after boot), counted after the
        # parenthesised command name, which may itself hold spaces.
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
