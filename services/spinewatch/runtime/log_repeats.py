"""Third-party warnings that repeat through an outage: one line per call site per period.

Measured before this filter: during the 20 s broker outages of
tests/test_broker_outages_e2e.py, aiokafka wrote 4,228 warning and error
lines (1,978 "Unable connect to node", 1,020 "Unable to update metadata",
561 "Group Coordinator Request failed", 393 "Failed fetch messages", 252
"OffsetCommit failed"): the one line of spinewatch's own that says what is
wrong drowns in them. spinewatch's own loops already log one line per
failure (the supervisor), so only faust's, mode's, aiokafka's and redis'
loggers are limited, and only at WARNING and above: debug output is asked
for and kept whole.

A call site (file and line) logs at most once per `period_s`; the next line
it logs after the period says how many were withheld since the last one.
The count of the last burst is printed only if the site logs again: the
supervisor's and the health checks' own lines say when an outage ended.

Considered and not taken: `log-rate-limit` 1.4.2 (PyPI, made for this). It
puts its summary on a new line (hard-coded), appends expiry notes to
unrelated records and, for a withheld record, replaces `msg` while leaving
its `args` (which breaks %-formatting), and its clock cannot be injected
for a test. Forty lines of our own are easier to trust.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

THIRD_PARTY: Final = ("aiokafka", "faust", "mode", "redis", "kafka")
DEFAULT_PERIOD_S: Final = 10.0


@dataclass
class _Site:
    quiet_until: float
    withheld: int = 0


class RepeatLimit(logging.Filter):
    """At most one WARNING+ line per third-party call site per `period_s`."""

    def __init__(
        self,
        period_s: float = DEFAULT_PERIOD_S,
        loggers: tuple[str, ...] = THIRD_PARTY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._period_s = period_s
        self._loggers = loggers
        self._clock = clock
        # Keyed by call site, a finite set (the code's lines), never by text.
        self._sites: dict[tuple[str, int], _Site] = {}
        # faust's consumer thread logs too; handlers call filters unlocked.
        self._lock = threading.Lock()

    def _limited(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        name = record.name
        return any(name == root or name.startswith(root + ".") for root in self._loggers)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._limited(record):
            return True
        now = self._clock()
        with self._lock:
            site = self._sites.get((record.pathname, record.lineno))
            if site is not None and now < site.quiet_until:
                site.withheld += 1
                return False
            withheld = site.withheld if site is not None else 0
            self._sites[(record.pathname, record.lineno)] = _Site(now + self._period_s)
        if withheld:
            # Appended to the format string: no `%` in it, so args still apply.
            record.msg = f"{record.msg} [{withheld} more like this withheld since the last]"
        return True
