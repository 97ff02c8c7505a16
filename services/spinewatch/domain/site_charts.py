"""A site's drift charts, kept equal to the fold over its cases in clinical order.

A chart is defined as the fold of `observe` over the site's cases sorted by
(procedure time, procedure id), each case weighed against its stratum's
baseline (`spinewatch.domain.charts` states that definition in a few
lines). Refolding a whole site whenever one case changes would cost
O(site) per update, so `SiteCharts` keeps the chart states every
`CHECKPOINT_EVERY` cases and refolds only from the checkpoint before the
earliest case that changed. New procedures usually arrive in clinical order
(a short tail to fold); an outcome reported late (a complication weeks
after the procedure) refolds from that case on, which is what "in procedure
order where the outcome is known later" requires. The result is the same
as a fold from scratch, whatever the order of updates: a property test
checks it against the definition.

Pure: no I/O, no clock. A worker holds one `PartitionCharts` per partition
it owns, rebuilt with the records on every recovery.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from spinewatch.domain.chart_fold import (
    AnyChart,
    AnyState,
    CaseKey,
    ChartCase,
    Outcomes,
    Run,
    SignalAt,
    Track,
    fold,
)
from spinewatch.domain.contribution import VAS_SCALE, Contribution, Tally, patients_with
from spinewatch.domain.drift_design import MonitoredChart, Outcome, Stratum
from spinewatch.domain.vas_drift import MonitoredVasChart

# Re-exported: the fold's value types are part of this module's surface.
__all__ = [
    "CHECKPOINT_EVERY",
    "SENTINEL_CATEGORIES",
    "AnyChart",
    "AnyState",
    "CaseKey",
    "ChartCase",
    "Outcomes",
    "PartitionCharts",
    "SentinelCase",
    "SignalAt",
    "SiteCharts",
    "Track",
    "outcome_reader",
]

CHECKPOINT_EVERY = 256


def outcome_reader(charts: Sequence[AnyChart]) -> Callable[[Tally], Outcomes]:
    """A function from a procedure's tally to its outcome on each chart.

    Rate charts: (adverse events, trials), None when there is no trial (e.g.
    no level imaged for leakage). VAS charts: the paired change in points,
    None until both scores are known. Built once per partition: it runs for
    every changed procedure, so the tally names are looked up in advance.
    """
    rates = [
        (j, c.metric.numerator_tally, c.metric.denominator_tally)
        for j, c in enumerate(charts)
        if isinstance(c, MonitoredChart)
    ]
    changes = [
        (j, *c.change_tallies) for j, c in enumerate(charts) if isinstance(c, MonitoredVasChart)
    ]
    size = len(charts)

    def outcomes(tally: Tally) -> Outcomes:
        found: list[Outcome | None] = [None] * size
        get = tally.get
        for j, numerator, denominator in rates:
            trials = get(denominator, 0)
            if trials > 0:
                events = get(numerator, 0)
                found[j] = (events if events < trials else trials, trials)
        for j, patients, total in changes:
            if get(patients):
                found[j] = tally[total] / VAS_SCALE
        return tuple(found)

    return outcomes


class SiteCharts:
    def __init__(
        self, charts: Sequence[AnyChart], checkpoint_every: int = CHECKPOINT_EVERY
    ) -> None:
        self.charts = tuple(charts)
        self._every = checkpoint_every
        initial = tuple(Track(chart.new_state()) for chart in charts)
        self._keys: list[CaseKey] = []
        self._cases: dict[CaseKey, ChartCase] = {}
        # _checkpoints[n]: the tracks after the first n * checkpoint_every cases.
        self._checkpoints: list[tuple[Track, ...]] = [initial]
        self.tracks: tuple[Track, ...] = initial
        self._stale_from: int | None = None

    def __len__(self) -> int:
        return len(self._keys)

    def put(self, key: CaseKey, case: ChartCase) -> None:
        if self._cases.get(key) == case:
            return  # e.g. a follow-up that changes no charted outcome
        index = bisect_left(self._keys, key)
        if key not in self._cases:
            self._keys.insert(index, key)
        self._cases[key] = case
        self._mark(index)

    def remove(self, key: CaseKey) -> None:
        if self._cases.pop(key, None) is None:
            return
        index = bisect_left(self._keys, key)
        del self._keys[index]
        self._mark(index)

    def _mark(self, index: int) -> None:
        if self._stale_from is None or index < self._stale_from:
            self._stale_from = index

    @property
    def stale(self) -> bool:
        return self._stale_from is not None

    def refresh(self) -> bool:
        """Refold from the checkpoint before the earliest change; False if nothing changed."""
        if self._stale_from is None:
            return False
        if not self.charts:
            # Drift monitoring off: nothing to fold, and no checkpoint to keep
            # (the folds below would add none, leaving later blocks unreachable).
            self._stale_from = None
            return False
        every = self._every
        block = self._stale_from // every
        del self._checkpoints[block + 1 :]
        start = block * every
        keys = self._keys[start:]
        cases = [self._cases[key] for key in keys]
        # Chart by chart (not case by case): the inner loop then touches one
        # chart's state only.
        run = Run(keys, cases, start, every)
        marks: list[list[Track]] = [[] for _ in self.charts]
        final = [
            fold(chart, j, start_track, run, marks[j])
            for j, (chart, start_track) in enumerate(
                zip(self.charts, self._checkpoints[block], strict=True)
            )
        ]
        self._checkpoints.extend(zip(*marks, strict=True))
        self.tracks = tuple(final)
        self._stale_from = None
        return True

    def window(
        self, chart_index: int, first: CaseKey, last: CaseKey
    ) -> list[tuple[Stratum, Outcome]]:
        """The cases one chart weighed from `first` to `last` inclusive (a signal's window)."""
        chart = self.charts[chart_index]
        cases = []
        start = bisect_left(self._keys, first)
        for key in self._keys[start:]:
            if key > last:
                break
            case = self._cases[key]
            outcome = case.outcomes[chart_index]
            if outcome is not None and case.stratum in chart.strata:
                cases.append((case.stratum, outcome))
        return cases

    def strata_between(self, chart_index: int, first: CaseKey, last: CaseKey) -> Counter[Stratum]:
        return Counter(stratum for stratum, _ in self.window(chart_index, first, last))


# Procedure-related complications the seeds' series report none of: every
# case is paged (alert_policy.SENTINEL_METRICS names their rates).
SENTINEL_CATEGORIES = ("pulmonary_cement_embolism", "death", "neurological_deficit")
_SENTINEL_TALLIES = tuple((c, patients_with(c)) for c in SENTINEL_CATEGORIES)
_SENTINEL_NAMES = tuple(name for _, name in _SENTINEL_TALLIES)


@dataclass(frozen=True, slots=True)
class SentinelCase:
    site_id: str
    category: str
    procedure_id: bytes  # hashed into the message id, never sent
    occurred_at_us: int
    stratum: Stratum


@dataclass(slots=True)
class PartitionCharts:
    """The charts of every site in one partition (a site lives in one partition)."""

    charts: tuple[AnyChart, ...]
    sites: dict[str, SiteCharts] = field(default_factory=dict)
    # Sentinel events found since the last `take_sentinels`, and per procedure
    # the categories already found (a redelivery finds nothing new).
    sentinels: list[SentinelCase] = field(default_factory=list)
    _sentinel_seen: dict[bytes, frozenset[str]] = field(default_factory=dict)
    _case_of: dict[bytes, tuple[str, CaseKey]] = field(default_factory=dict)
    _outcomes: Callable[[Tally], Outcomes] = field(init=False)

    def __post_init__(self) -> None:
        self._outcomes = outcome_reader(self.charts)

    def track(
        self, contributions: Mapping[bytes, Contribution], procedure_ids: Iterable[bytes]
    ) -> None:
        """Bring the cases of these procedures up to date with their contributions."""
        for procedure_id in procedure_ids:
            contribution = contributions.get(procedure_id)
            previous = self._case_of.get(procedure_id)
            if contribution is None:  # voided, or its procedure not known yet
                if previous is not None:
                    del self._case_of[procedure_id]
                    self.sites[previous[0]].remove(previous[1])
                continue
            site = contribution.cohort.site_id
            key = (contribution.occurred_at_us, procedure_id)
            if previous is not None and previous != (site, key):
                # A correction moved the procedure in time (or to another site).
                self.sites[previous[0]].remove(previous[1])
            self._case_of[procedure_id] = (site, key)
            charts = self.sites.get(site)
            if charts is None:
                charts = self.sites[site] = SiteCharts(self.charts)
            cohort = contribution.cohort
            stratum = (cohort.procedure_type.value, cohort.indication.value)
            charts.put(key, ChartCase(stratum, self._outcomes(contribution.tally)))
            self._find_sentinels(procedure_id, contribution, stratum)

    def _find_sentinels(
        self, procedure_id: bytes, contribution: Contribution, stratum: Stratum
    ) -> None:
        tally = contribution.tally
        if not any(map(tally.get, _SENTINEL_NAMES)):
            return  # nearly every procedure: no sentinel complication
        found = frozenset(c for c, name in _SENTINEL_TALLIES if tally.get(name))
        seen = self._sentinel_seen.get(procedure_id, frozenset())
        for category in sorted(found - seen):
            self.sentinels.append(
                SentinelCase(
                    contribution.cohort.site_id,
                    category,
                    procedure_id,
                    contribution.occurred_at_us,
                    stratum,
                )
            )
        if found:
            self._sentinel_seen[procedure_id] = seen | found

    def take_sentinels(self) -> list[SentinelCase]:
        taken, self.sentinels = self.sentinels, []
        return taken

    def refresh(self) -> list[str]:
        """Refold every site with changes; the sites whose charts moved."""
        return [site for site, charts in self.sites.items() if charts.refresh()]
