"""A site's drift charts, kept equal to the fold over its cases in clinical order.

A chart is defined as the fold of `observe` over the site's cases sorted by
(procedure time, procedure id), each case weighed against its stratum's
baseline (`spinewatch.domain.drift.charts` states that definition in a few
lines). Refolding a whole site whenever one case changes would cost
O(site) per update, so `SiteCharts` keeps the chart states every
`CHECKPOINT_EVERY` cases and refolds only from the checkpoint before the
earliest case that changed, chart by chart. New procedures usually arrive
in clinical order (a short tail to fold); an outcome reported late (a
complication weeks after the procedure) refolds from that case on, which is
what "in procedure order where the outcome is known later" requires, and
only on the charts whose outcome it changed. The result is the same
as a fold from scratch, whatever the order of updates: a property test
checks it against the definition.

Pure: no I/O, no clock. A worker holds one `PartitionCharts` per partition
it owns, rebuilt with the records on every recovery.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from spinewatch.domain.drift.chart_fold import (
    AnyChart,
    AnyState,
    CaseKey,
    ChartCase,
    Outcomes,
    Restart,
    Run,
    SignalAt,
    Track,
    fold,
)
from spinewatch.domain.drift.design import MonitoredChart, Outcome, Stratum
from spinewatch.domain.drift.sentinels import (
    SENTINEL_CATEGORIES,
    SentinelCase,
    SentinelWatch,
    SentinelWithdrawal,
)
from spinewatch.domain.drift.vas_drift import MonitoredVasChart
from spinewatch.domain.outcomes.contribution import VAS_SCALE, Contribution, Tally
from spinewatch.domain.outcomes.partition import Records
from spinewatch.domain.outcomes.records import ProcedureRecord

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
    "Restart",
    "SentinelCase",
    "SentinelWithdrawal",
    "SignalAt",
    "SiteCharts",
    "Track",
    "outcome_reader",
]

CHECKPOINT_EVERY = 256
_SHARED_TRIALS = 32  # outcomes of up to 31 trials (treated levels) share their pair
_SHARED_CHANGES = 1 << 16  # VAS changes shared (20,001 possible on a 0-10 scale)
_SHARED_ROWS = 1 << 16  # rows of outcomes shared, per partition


def outcome_reader(charts: Sequence[AnyChart]) -> Callable[[Tally, Stratum], Outcomes]:
    """A function from a procedure's tally to its outcome on each chart.

    Rate charts: (adverse events, trials), None when there is no trial (e.g.
    no level imaged for leakage). VAS charts: the paired change in points,
    None until both scores are known. Built once per partition: it runs for
    every changed procedure, so the tally names are looked up in advance. A
    stratum whose comparator counted leakage on one modality reads that
    modality's tallies (like with like, see `StratumRisk.tallies`).
    """
    rates = [
        (
            j,
            c.metric.numerator_tally,
            c.metric.denominator_tally,
            {s: r.tallies for s, r in c.strata.items() if r.tallies is not None},
        )
        for j, c in enumerate(charts)
        if isinstance(c, MonitoredChart)
    ]
    changes = [
        (j, *c.change_tallies) for j, c in enumerate(charts) if isinstance(c, MonitoredVasChart)
    ]
    size = len(charts)
    # Outcomes are held for every case of every site: equal values share one
    # object (a pair of small ints, a VAS change in thousandths of a point),
    # where one each per case cost about 400 bytes a procedure
    # (benchmarks/chart_memory.py). The values are the same.
    pairs = [[(events, trials) for events in range(trials + 1)] for trials in range(_SHARED_TRIALS)]
    vas_changes: dict[int, float] = {}
    # Whole rows too: a few thousand distinct rows per 10,000 procedures.
    rows: dict[Outcomes, Outcomes] = {}

    def outcomes(tally: Tally, stratum: Stratum) -> Outcomes:
        found: list[Outcome | None] = [None] * size
        get = tally.get
        for j, all_levels, all_trials, like_with_like in rates:
            numerator, denominator = (
                like_with_like.get(stratum, (all_levels, all_trials))
                if like_with_like
                else (all_levels, all_trials)
            )
            trials = get(denominator, 0)
            if trials > 0:
                events = get(numerator, 0)
                events = min(events, trials)
                found[j] = (
                    pairs[trials][events]
                    if trials < _SHARED_TRIALS and events >= 0
                    else (events, trials)
                )
        for j, patients, total in changes:
            if get(patients):
                thousandths = tally[total]
                change = vas_changes.get(thousandths)
                if change is None:
                    change = thousandths / VAS_SCALE
                    if len(vas_changes) < _SHARED_CHANGES:
                        vas_changes[thousandths] = change
                found[j] = change
        row = tuple(found)
        shared = rows.get(row)
        if shared is not None:
            return shared
        if len(rows) >= _SHARED_ROWS:
            rows.clear()  # bounded: rows held by cases stay, the table starts again
        rows[row] = row
        return row

    return outcomes


# Per chart index: the instants (epoch microseconds) of its operator resets.
Resets = Mapping[int, Iterable[int]]


class SiteCharts:
    def __init__(
        self,
        charts: Sequence[AnyChart],
        checkpoint_every: int = CHECKPOINT_EVERY,
        resets: Resets | None = None,
    ) -> None:
        self.charts = tuple(charts)
        self._every = checkpoint_every
        # Per chart, sorted: each restarts the CUSUM (`chart_fold.fold`).
        self._resets: list[list[int]] = [
            sorted(set((resets or {}).get(j, ()))) for j in range(len(self.charts))
        ]
        initial = tuple(Track(chart.new_state()) for chart in charts)
        # Sorted, once `_merge` has added the keys of cases new since the last
        # refresh: a replay adds tens of thousands, and one sort per refresh
        # costs less than a bisect and a list insert per case.
        self._keys: list[CaseKey] = []
        self._unmerged: list[CaseKey] = []
        self._cases: dict[CaseKey, ChartCase] = {}
        # _checkpoints[j][n]: chart j's track after the first n * checkpoint_every cases.
        self._checkpoints: list[list[Track]] = [[track] for track in initial]
        self.tracks: tuple[Track, ...] = initial
        # Where each chart must refold from, as the earliest case key that
        # changed: a case added or removed shifts every chart's positions
        # (`_shifted_from`); an outcome that changed moves only its own chart,
        # so a late follow-up refolds the VAS charts, not the leakage charts.
        self._shifted_from: CaseKey | None = None
        self._changed_from: list[CaseKey | None] = [None] * len(self.charts)

    def __len__(self) -> int:
        return len(self._cases)

    def __contains__(self, key: CaseKey) -> bool:
        return key in self._cases

    def cases(self) -> list[tuple[CaseKey, ChartCase]]:
        """Every case in clinical order (what a site's design is measured on)."""
        self._merge()
        return [(key, self._cases[key]) for key in self._keys]

    def redesign(self, charts: Sequence[AnyChart]) -> None:
        """Take the site's own chart designs: every chart whose design changed
        is refolded from the first case on the next `refresh`."""
        if len(charts) != len(self.charts):
            raise ValueError("a redesign keeps the charts, only their limits change")
        old, self.charts = self.charts, tuple(charts)
        changed = [
            j for j, (a, b) in enumerate(zip(old, self.charts, strict=True)) if a.design != b.design
        ]
        self._merge()
        tracks = list(self.tracks)
        for j in changed:
            tracks[j] = Track(self.charts[j].new_state())
            self._checkpoints[j] = [tracks[j]]
        self.tracks = tuple(tracks)
        if self._keys:
            self._change(self._keys[0], changed)

    def restart(self, chart_index: int, instant_us: int) -> bool:
        """An operator reset of one chart at an instant; False if it was known.

        The chart refolds from the checkpoint before its first case after
        the instant on the next `refresh` (a reset after every case known
        refolds the last block only)."""
        resets = self._resets[chart_index]
        at = bisect_left(resets, instant_us)
        if at < len(resets) and resets[at] == instant_us:
            return False
        resets.insert(at, instant_us)
        # The least key of a case performed after the instant.
        self._change((instant_us + 1, b""), [chart_index])
        return True

    def resets(self, chart_index: int) -> tuple[int, ...]:
        return tuple(self._resets[chart_index])

    def put(self, key: CaseKey, case: ChartCase) -> None:
        old = self._cases.get(key)
        if old == case:
            return  # e.g. a follow-up that changes no charted outcome
        self._cases[key] = case
        if old is None:
            self._unmerged.append(key)
            self._shift(key)
        elif old.stratum != case.stratum:
            self._change(key, range(len(self.charts)))
        else:
            self._change(key, _differing(old.outcomes, case.outcomes))

    def remove(self, key: CaseKey) -> None:
        if self._cases.pop(key, None) is None:
            return
        self._merge()
        del self._keys[bisect_left(self._keys, key)]
        self._shift(key)

    def _shift(self, key: CaseKey) -> None:
        if self._shifted_from is None or key < self._shifted_from:
            self._shifted_from = key

    def _change(self, key: CaseKey, chart_indexes: Iterable[int]) -> None:
        changed = self._changed_from
        for j in chart_indexes:
            earliest = changed[j]
            if earliest is None or key < earliest:
                changed[j] = key

    def _merge(self) -> None:
        new = self._unmerged
        if not new:
            return
        new.sort()
        keys = self._keys
        in_order = not keys or keys[-1] < new[0]  # the usual case: cases arrive in order
        keys.extend(new)
        if not in_order:
            keys.sort()  # two sorted runs: timsort merges them in linear time
        self._unmerged = []

    def _stale_blocks(self) -> list[int | None]:
        """Per chart, the checkpoint block to refold from; None when it has not changed."""
        shifted, keys, every = self._shifted_from, self._keys, self._every
        blocks: list[int | None] = []
        for changed in self._changed_from:
            earliest = min(changed, shifted) if changed and shifted else changed or shifted
            blocks.append(None if earliest is None else bisect_left(keys, earliest) // every)
        return blocks

    def refresh(self) -> bool:
        """Refold each changed chart from the checkpoint before its earliest change;
        False if nothing changed."""
        if self._shifted_from is None and not any(self._changed_from):
            return False
        self._merge()
        blocks = self._stale_blocks()
        self._shifted_from, self._changed_from = None, [None] * len(self.charts)
        if not self.charts:
            # Drift monitoring off: nothing to fold, and no checkpoint to keep.
            return False
        every = self._every
        start = min(block for block in blocks if block is not None) * every
        cases = [self._cases[key] for key in self._keys[start:]]
        tracks = list(self.tracks)
        # Chart by chart (not case by case): the inner loop then touches one
        # chart's state only.
        for j, (chart, block) in enumerate(zip(self.charts, blocks, strict=True)):
            if block is None:
                continue
            checkpoints = self._checkpoints[j]
            del checkpoints[block + 1 :]
            first = block * every
            run = Run(self._keys[first:], cases[first - start :], first, every)
            tracks[j] = fold(chart, j, checkpoints[block], run, checkpoints, resets=self._resets[j])
        self.tracks = tuple(tracks)
        return True

    def window(
        self, chart_index: int, first: CaseKey, last: CaseKey
    ) -> list[tuple[Stratum, Outcome]]:
        """The cases one chart weighed from `first` to `last` inclusive (a signal's window)."""
        return [
            (case.stratum, outcome)
            for _, case, outcome in self.charted(chart_index, first, last, after=False)
        ]

    def charted(
        self, chart_index: int, lower: CaseKey | None, last: CaseKey, *, after: bool
    ) -> Iterator[tuple[CaseKey, ChartCase, Outcome]]:
        """The cases one chart weighs, in chart order, from `lower` (exclusive when
        `after`; None: the first case) to `last` inclusive."""
        chart = self.charts[chart_index]
        self._merge()
        keys = self._keys
        if lower is None:
            start = 0
        else:
            start = bisect_right(keys, lower) if after else bisect_left(keys, lower)
        for key in keys[start:]:
            if key > last:
                break
            case = self._cases[key]
            outcome = case.outcomes[chart_index]
            if outcome is not None and case.stratum in chart.strata:
                yield key, case, outcome

    def strata_between(self, chart_index: int, first: CaseKey, last: CaseKey) -> Counter[Stratum]:
        return Counter(stratum for stratum, _ in self.window(chart_index, first, last))


def _differing(old: Outcomes, new: Outcomes) -> Iterator[int]:
    return (j for j, (a, b) in enumerate(zip(old, new, strict=True)) if a != b)


@dataclass(slots=True)
class PartitionCharts:
    """The charts of every site in one partition (a site lives in one partition)."""

    charts: tuple[AnyChart, ...]
    sites: dict[str, SiteCharts] = field(default_factory=dict)
    # Sentinel events found and withdrawn since the last `take_sentinels`
    # (a redelivery finds nothing new; see `domain/drift/sentinels.py`).
    sentinels: SentinelWatch = field(default_factory=SentinelWatch)
    # Operator resets per site (shared with the drift monitor, which adds to
    # it): a site's charts are created with them.
    resets: Mapping[str, Resets] = field(default_factory=dict)
    _case_of: dict[bytes, CaseKey] = field(default_factory=dict)
    _outcomes: Callable[[Tally, Stratum], Outcomes] = field(init=False)

    def __post_init__(self) -> None:
        self._outcomes = outcome_reader(self.charts)

    def track(
        self,
        contributions: Mapping[bytes, Contribution],
        procedure_ids: Iterable[bytes],
        records: Mapping[bytes, ProcedureRecord] | None = None,
    ) -> None:
        """Bring the cases of these procedures up to date with their contributions.

        With `records`, a sentinel's generation (retracted reports) is read
        from its record; without, every sentinel is generation 0.
        """
        case_of, sites, outcomes = self._case_of, self.sites, self._outcomes
        follow = self.sentinels.follow
        for procedure_id in procedure_ids:
            contribution = contributions.get(procedure_id)
            previous = case_of.get(procedure_id)
            record = None if records is None else records.get(procedure_id)
            if contribution is None:  # voided, or its procedure not known yet
                if previous is not None:
                    del case_of[procedure_id]
                    self._remove(previous)
                follow(procedure_id, None, record)
                continue
            cohort = contribution.key[0]
            site, key = cohort.site_id, (contribution.occurred_at_us, procedure_id)
            charts = sites.get(site)
            if charts is None:
                charts = sites[site] = SiteCharts(self.charts, resets=self.resets.get(site))
            if previous is None or previous != key or previous not in charts:
                if previous is not None:
                    # A correction moved the procedure in time (or to another site).
                    self._remove(previous)
                case_of[procedure_id] = key
            charts.put(key, ChartCase(cohort.stratum, outcomes(contribution.tally, cohort.stratum)))
            follow(procedure_id, contribution, record)

    def _remove(self, key: CaseKey) -> None:
        """A case from the site that holds it (the map holds keys only: a site per
        procedure cost a tuple each; corrections and voids are rare)."""
        for charts in self.sites.values():
            if key in charts:
                charts.remove(key)
                return

    def recall_withdrawals(self, records: Records) -> None:
        """After a rebuild: the withdrawals the records imply, announced again."""
        self.sentinels.recall(records)

    def take_sentinels(self) -> list[SentinelCase | SentinelWithdrawal]:
        return self.sentinels.take()

    def refresh(self) -> list[str]:
        """Refold every site with changes; the sites whose charts moved."""
        return [site for site, charts in self.sites.items() if charts.refresh()]
