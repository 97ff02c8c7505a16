"""Stream silence: a site that stops sending events, judged in arrival time.

A silent site sends nothing, so its clinical timestamps cannot tell; the
worker that owns the site (fact batches are keyed by site, so a site lives
in one partition) notes the wall-clock instant each of its fact batches
arrives and judges the gaps between them. Times are plain seconds handed in
by the caller (the clock is injected), so this module holds no I/O.

The rule, per site:

* usual gap = (last - first) / (n - 1) over the n arrivals held from the
  trailing `window_s` (28 days) before the latest one. Arrivals closer than
  `window_s / MAX_HELD` (about 40 minutes) count once: a bulk upload of a
  thousand events is one arrival, not a thousand (so a site that uploads
  once a day has a usual gap of a day, not of minutes), and memory is
  bounded at MAX_HELD instants per site.
* silent when now - last arrival > max(multiple x usual gap, min_s), and
  only once the site has `min_arrivals` arrivals held (a gap estimated from
  fewer is too noisy: its relative standard error is 1/sqrt(n - 1)).
* resumed at the site's next arrival.

Why multiple 8 and a 96 h floor. Were arrivals Poisson and the usual gap
known, a gap would exceed k of them with probability e^-k; estimated from
m gaps it is (1 + k/m)^-m (the estimate is Gamma(m, m) about the truth).
A site sending 5 batches a week holds m = 19 gaps over 28 days and has 260
gaps a year: at k = 5 it would warn 3.1 times a year for nothing (1 gap in
85), more than all its drift charts together (`budget.py`: about two a
year per site); at k = 8, 0.33 a year (1 gap in 794; 0.09 with a known
gap). Real streams are not Poisson: nothing is sent over weekends and
public holidays, so a busy site (a gap of minutes) would be "silent" every
Saturday without a floor. 96 h covers a long weekend (Friday 17:00 to
Tuesday 08:00 is 87 h); a four-day closure (Easter) can still warn for a
busy site, which is what a warning is for.

A site's state lives in the memory of the worker that owns it. A worker
that restarts, or takes a site over after a rebalance, starts its timer at
the site's first arrival there and judges it once `min_arrivals` arrivals
are held again. Since it cannot know whether the previous owner reported a
silence, that first arrival sends a `resumed` (`last_event_at` null):
the alerting service resolves the site's silence alert if one is firing,
and ignores it otherwise.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID, uuid5

from spinewatch.contracts.drift import DriftSilence

_NAMESPACE = UUID("0d6f3b0e-5c55-4d43-8a1e-5a7d3f0c2b19")

# Arrival instants held per site: the window divided by this is the
# spacing under which arrivals count once.
MAX_HELD = 1024

DEFAULT_MULTIPLE = 8.0
DEFAULT_MIN_S = 96 * 3600.0
DEFAULT_MIN_ARRIVALS = 10
DEFAULT_WINDOW_S = 28 * 86_400.0


@dataclass(frozen=True, slots=True)
class SilenceRule:
    multiple: float = DEFAULT_MULTIPLE
    min_s: float = DEFAULT_MIN_S
    min_arrivals: int = DEFAULT_MIN_ARRIVALS
    window_s: float = DEFAULT_WINDOW_S

    def __post_init__(self) -> None:
        if self.multiple <= 0 or self.min_s < 0 or self.window_s <= 0:
            raise ValueError("multiple and window must be positive, the floor not negative")
        if self.min_arrivals < 2:
            raise ValueError("a usual gap needs at least 2 arrivals")

    @property
    def spacing_s(self) -> float:
        """Arrivals closer than this count once."""
        return self.window_s / MAX_HELD

    def threshold_s(self, usual_gap_s: float) -> float:
        return max(self.multiple * usual_gap_s, self.min_s)


@dataclass(slots=True)
class Heartbeat:
    """One site's arrivals, as held by the worker that owns it."""

    last_s: float
    held: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_HELD))
    # The last arrival before the silence, while the site is silent.
    silent_since_s: float | None = None


@dataclass(frozen=True, slots=True)
class SiteSilence:
    """One site's reading, for the gauges."""

    site_id: str
    seconds_since_last: float
    silent: bool
    threshold_s: float | None  # None: not judged yet (too few arrivals)


class SilenceWatch:
    """The heartbeats of the sites of one partition."""

    def __init__(self, rule: SilenceRule) -> None:
        self.rule = rule
        self.sites: dict[str, Heartbeat] = {}

    def usual_gap_s(self, beat: Heartbeat) -> float | None:
        held = beat.held
        if len(held) < self.rule.min_arrivals or held[-1] <= held[0]:
            return None
        return (held[-1] - held[0]) / (len(held) - 1)

    def arrived(self, site_id: str, now_s: float) -> DriftSilence | None:
        """Note an arrival; the `resumed` message it implies, if any."""
        beat = self.sites.get(site_id)
        message = None
        if beat is None:
            beat = self.sites[site_id] = Heartbeat(now_s)
            message = self._resumed(site_id, beat, None, now_s)
        elif beat.silent_since_s is not None:
            message = self._resumed(site_id, beat, beat.silent_since_s, now_s)
            beat.silent_since_s = None
        beat.last_s = max(beat.last_s, now_s)
        held = beat.held
        if not held or now_s - held[-1] >= self.rule.spacing_s:
            held.append(now_s)
        while held and held[0] < now_s - self.rule.window_s:
            held.popleft()
        return message

    def judge(self, now_s: float) -> Iterator[DriftSilence]:
        """A `silent` message for each site whose silence began since the last call."""
        for site_id, beat in sorted(self.sites.items()):
            if beat.silent_since_s is not None:
                continue
            gap = self.usual_gap_s(beat)
            if gap is None or now_s - beat.last_s <= self.rule.threshold_s(gap):
                continue
            beat.silent_since_s = beat.last_s
            yield self._message("silent", site_id, beat, beat.last_s, None)

    def readings(self, now_s: float) -> Iterator[SiteSilence]:
        for site_id, beat in sorted(self.sites.items()):
            gap = self.usual_gap_s(beat)
            yield SiteSilence(
                site_id,
                max(0.0, now_s - beat.last_s),
                beat.silent_since_s is not None,
                None if gap is None else self.rule.threshold_s(gap),
            )

    def _resumed(
        self, site_id: str, beat: Heartbeat, since_s: float | None, now_s: float
    ) -> DriftSilence:
        return self._message("resumed", site_id, beat, since_s, now_s)

    def _message(
        self,
        status: Literal["silent", "resumed"],
        site_id: str,
        beat: Heartbeat,
        since_s: float | None,
        resumed_s: float | None,
    ) -> DriftSilence:
        gap = self.usual_gap_s(beat)
        return DriftSilence(
            event_type="drift.silence",
            schema_version=1,
            silence_id=silence_id(site_id, since_s, resumed_s),
            status=status,
            site_id=site_id,
            last_event_at=_instant(since_s),
            resumed_at=_instant(resumed_s),
            usual_gap_s=gap,
            threshold_s=None if gap is None else self.rule.threshold_s(gap),
            multiple=self.rule.multiple,
            arrivals=len(beat.held),
        )


def silence_id(site_id: str, since_s: float | None, resumed_s: float | None) -> UUID:
    """The episode's id: its site and the last arrival before it.

    A resumption the worker did not see begin names an episode of its own
    (the site and the arrival that ended it): nothing else is known of it.
    """
    if since_s is not None:
        return uuid5(_NAMESPACE, f"{site_id}|since|{_micros(since_s)}")
    return uuid5(_NAMESPACE, f"{site_id}|unseen|{_micros(resumed_s or 0.0)}")


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _instant(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)
