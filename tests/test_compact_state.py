"""The compact per-procedure state of the drift charts and the follow-up book folds as before.

Issue 20 (registry-scale state) made the cases lighter: equal outcomes share
one object, the partition's map of cases holds keys only, and the follow-up
book derives a procedure's cases from its plan instead of keeping a list of
them. Each test runs random sequences through the compact structures and a
reference that keeps the previous representation, and asserts the same
cases, tracks (CUSUM, VLAD, signals, change points) and clocks.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import cast
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from spinewatch.contracts import Indication, ProcedureType
from spinewatch.domain.drift.chart_fold import AnyChart, CaseKey, ChartCase, Outcomes
from spinewatch.domain.drift.design import MonitoredChart, Outcome, Stratum
from spinewatch.domain.drift.site_charts import PartitionCharts, SiteCharts, outcome_reader
from spinewatch.domain.drift.vas_drift import MonitoredVasChart
from spinewatch.domain.followup import book as book_module
from spinewatch.domain.followup.book import CompletenessDesign, FollowupBook
from spinewatch.domain.followup.chart import MISSED, RECEIVED, STRATUM
from spinewatch.domain.followup.completeness import ProcedurePlan
from spinewatch.domain.followup.schedule import (
    DAY_US,
    DEFAULT_SCHEDULE,
    closes_at,
    schedule_windows,
)
from spinewatch.domain.outcomes.contribution import VAS_SCALE, CohortKey, Contribution, Tally
from spinewatch.domain.outcomes.records import ProcedureRecord
from tests.test_site_charts import _charts

STRATA = [(ProcedureType.PVP, Indication.HEMANGIOMA), (ProcedureType.PVP, Indication.METASTASIS),
          (ProcedureType.PKP, Indication.OTHER)]  # fmt: skip
SITES = ["north", "south", "east"]


# --- outcomes ----------------------------------------------------------------------------


def _reference_reader(charts: Sequence[AnyChart]) -> Callable[[Tally, Stratum], Outcomes]:
    """The reader before issue 20: a fresh object for every outcome."""

    def outcomes(tally: Tally, stratum: Stratum) -> Outcomes:
        found: list[Outcome | None] = [None] * len(charts)
        for j, chart in enumerate(charts):
            if isinstance(chart, MonitoredChart):
                numerator = chart.metric.numerator_tally
                denominator = chart.metric.denominator_tally
                like = {s: r.tallies for s, r in chart.strata.items() if r.tallies is not None}
                if like:
                    numerator, denominator = like.get(stratum, (numerator, denominator))
                trials = tally.get(denominator, 0)
                if trials > 0:
                    events = tally.get(numerator, 0)
                    found[j] = (events if events < trials else trials, trials)
            elif isinstance(chart, MonitoredVasChart):
                patients, total = chart.change_tallies
                if tally.get(patients):
                    found[j] = tally[total] / VAS_SCALE
        return tuple(found)

    return outcomes


def _tally_names(charts: Sequence[AnyChart]) -> tuple[list[str], list[tuple[str, str]]]:
    counts, changes = set(), []
    for chart in charts:
        if isinstance(chart, MonitoredChart):
            counts |= {chart.metric.numerator_tally, chart.metric.denominator_tally}
            for risk in chart.strata.values():
                if risk.tallies is not None:
                    counts |= set(risk.tallies)
        else:
            changes.append(chart.change_tallies)
    return sorted(counts), changes


@st.composite
def _tallies(draw: st.DrawFn, charts: Sequence[AnyChart]) -> Tally:
    counts, changes = _tally_names(charts)
    tally: Tally = {}
    for name in counts:
        if draw(st.booleans()):
            # Past the shared pairs (31 trials) too, and events above trials.
            tally[name] = draw(st.integers(0, 40))
    for patients, total in changes:
        if draw(st.booleans()):
            tally[patients] = 1
            tally[total] = draw(st.integers(-10_000, 10_000))
    return tally


_CHARTS = _charts()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_tallies(_CHARTS), st.sampled_from(STRATA)), min_size=1, max_size=30))
def test_shared_outcomes_equal_fresh_ones_and_repeat_as_one_object(
    drawn: list[tuple[Tally, tuple[ProcedureType, Indication]]],
) -> None:
    compact, reference = outcome_reader(_CHARTS), _reference_reader(_CHARTS)
    for tally, (procedure, indication) in drawn:
        stratum = (procedure.value, indication.value)
        row = compact(tally, stratum)
        assert row == reference(tally, stratum)
        assert [type(o) for o in row] == [type(o) for o in reference(tally, stratum)]
        again = compact(dict(tally), stratum)
        assert again is row  # shared: the memory the change is for


# --- the partition's cases ------------------------------------------------------------------


class _ReferencePartition(PartitionCharts):
    """`track` before issue 20: a (site, key) tuple per procedure, fresh outcomes."""

    def track(
        self,
        contributions: Mapping[bytes, Contribution],
        procedure_ids: Iterable[bytes],
        records: Mapping[bytes, ProcedureRecord] | None = None,
    ) -> None:
        # (PartitionCharts has slots; this subclass keeps its map in an instance dict.)
        placed_of: dict[bytes, tuple[str, CaseKey]] = self.__dict__.setdefault("placed", {})
        reader = _reference_reader(self.charts)
        for procedure_id in procedure_ids:
            contribution = contributions.get(procedure_id)
            previous = placed_of.get(procedure_id)
            if contribution is None:
                if previous is not None:
                    del placed_of[procedure_id]
                    self.sites[previous[0]].remove(previous[1])
                continue
            cohort = contribution.key[0]
            site, key = placed = (cohort.site_id, (contribution.occurred_at_us, procedure_id))
            if previous != placed:
                if previous is not None:
                    self.sites[previous[0]].remove(previous[1])
                placed_of[procedure_id] = placed
            charts = self.sites.get(site)
            if charts is None:
                charts = self.sites[site] = SiteCharts(self.charts)
            charts.put(key, ChartCase(cohort.stratum, reader(contribution.tally, cohort.stratum)))


@st.composite
def _updates(draw: st.DrawFn) -> list[list[tuple[bytes, Contribution | None]]]:
    """Batches of changes to a few procedures: new, corrected in time or site, voided."""
    ids = [bytes([n]) * 16 for n in range(draw(st.integers(1, 12)))]
    batches = []
    for _ in range(draw(st.integers(1, 12))):
        batch: list[tuple[bytes, Contribution | None]] = []
        for _ in range(draw(st.integers(1, 8))):
            procedure_id = draw(st.sampled_from(ids))
            if draw(st.integers(0, 9)) == 0:
                batch.append((procedure_id, None))
                continue
            procedure, indication = draw(st.sampled_from(STRATA))
            cohort = CohortKey(draw(st.sampled_from(SITES)), procedure, indication)
            tally = draw(_tallies(_CHARTS))
            batch.append(
                (procedure_id, Contribution((cohort, None), tally, draw(st.integers(0, 9))))
            )
        batches.append(batch)
    return batches


def _state(charts: PartitionCharts) -> dict[str, tuple[object, ...]]:
    return {
        site: (tuple(cases.cases()), cases.tracks)
        for site, cases in charts.sites.items()
        if len(cases)
    }


@settings(max_examples=200, deadline=None)
@given(_updates())
def test_the_partitions_cases_and_tracks_equal_the_previous_representation(
    batches: list[list[tuple[bytes, Contribution | None]]],
) -> None:
    compact, reference = PartitionCharts(_CHARTS), _ReferencePartition(_CHARTS)
    contributions: dict[bytes, Contribution] = {}
    for batch in batches:
        for procedure_id, contribution in batch:
            if contribution is None:
                contributions.pop(procedure_id, None)
            else:
                contributions[procedure_id] = contribution
        changed = [procedure_id for procedure_id, _ in batch]
        compact.track(contributions, changed)
        reference.track(contributions, changed)
        compact.refresh()
        reference.refresh()
        assert _state(compact) == _state(reference)
    # Every procedure held once, where its contribution says.
    held = {key[1]: site for site, cases in compact.sites.items() for key, _ in cases.cases()}
    assert held == {p: c.key[0].site_id for p, c in contributions.items()}


# --- the follow-up book -------------------------------------------------------------------


class _ReferenceBook(FollowupBook):
    """The book before issue 20: a list of placed (site, key) per procedure."""

    def __init__(self, design: CompletenessDesign) -> None:
        super().__init__(design)
        self.placed: dict[bytes, list[tuple[str, CaseKey]]] = {}

    def _replan(self, procedure_id: bytes, touched: set[str]) -> None:
        # Plans stand in for records in these tests (see the test below).
        plan = cast(ProcedurePlan | None, self._records.get(procedure_id))
        old = self.plans.get(procedure_id)
        if plan == old:
            return
        if old is not None and old.latest_us >= self.clocks.get(old.site_id, 0):
            self._clock_moved_back.add(old.site_id)
        for site_id, key in self.placed.pop(procedure_id, ()):
            self._remove(site_id, key)
            touched.add(site_id)
        if plan is None:
            self.plans.pop(procedure_id, None)
            return
        self.plans[procedure_id] = plan
        if plan.latest_us > self.clocks.get(plan.site_id, -1):
            self.clocks[plan.site_id] = plan.latest_us
        closing = self._closing.setdefault(plan.site_id, [])
        for index, window in enumerate(self.design.windows):
            heapq.heappush(closing, (closes_at(window, plan.procedure_us), procedure_id, index))

    def _close_until(self, site_id: str, watermark_us: int, touched: set[str]) -> None:
        closing, windows = self._closing.get(site_id, []), self.design.windows
        while closing and closing[0][0] <= watermark_us:
            close, procedure_id, index = heapq.heappop(closing)
            plan = self.plans.get(procedure_id)
            window = windows[index]
            if (
                plan is None
                or plan.site_id != site_id
                or closes_at(window, plan.procedure_us) != close
            ):
                continue
            key: CaseKey = (close, procedure_id + bytes((index,)))
            placed = self.placed.setdefault(procedure_id, [])
            if (plan.site_id, key) in placed:
                continue
            received = window.timepoint in plan.received
            if plan.censored and not received:
                continue
            self._put(plan.site_id, key, RECEIVED if received else MISSED)
            placed.append((plan.site_id, key))
            touched.add(plan.site_id)


@st.composite
def _plans(draw: st.DrawFn) -> list[list[tuple[bytes, ProcedurePlan | None]]]:
    """Batches of plan changes: new procedures over ~4 months (so charts get designed),
    follow-ups received (on time or late), deaths, moves in time or site, retractions."""
    ids = [bytes([n]) * 16 for n in range(draw(st.integers(1, 40)))]
    batches = []
    for _ in range(draw(st.integers(1, 10))):
        batch: list[tuple[bytes, ProcedurePlan | None]] = []
        for _ in range(draw(st.integers(1, 12))):
            procedure_id = draw(st.sampled_from(ids))
            if draw(st.integers(0, 11)) == 0:
                batch.append((procedure_id, None))
                continue
            day = draw(st.integers(0, 120))
            received = {
                timepoint: (day + draw(st.sampled_from([1, 2, 6, 9, 30]))) * DAY_US
                for timepoint in DEFAULT_SCHEDULE
                if draw(st.booleans())
            }
            plan = ProcedurePlan(
                draw(st.sampled_from(SITES[:2])), "pvp", "hemangioma", None, day * DAY_US,
                7000, received, draw(st.integers(0, 9)) == 0,
            )  # fmt: skip
            batch.append((procedure_id, plan))
        batches.append(batch)
    return batches


def _book_state(book: FollowupBook) -> tuple[object, ...]:
    return (
        {site: dict(cases) for site, cases in book.cases.items() if cases},
        {site: (tuple(charts.cases()), charts.tracks) for site, charts in book.charts.items()},
        dict(book.clocks),
        dict(book.plans),
    )


@settings(max_examples=150, deadline=None)
@given(_plans())
def test_the_follow_up_books_cases_and_charts_equal_the_previous_representation(
    batches: list[list[tuple[bytes, ProcedurePlan | None]]],
) -> None:
    design = CompletenessDesign(schedule_windows(DEFAULT_SCHEDULE), 0.8, 2.0, 60.0)
    compact, reference = FollowupBook(design), _ReferenceBook(design)
    records: dict[bytes, ProcedurePlan] = {}
    # Plans stand in for records here: the bookkeeping is under test, not `plan_of`.
    with mock.patch.object(book_module, "plan_of", lambda plan: plan):  # read in `_replan`
        for batch in batches:
            for procedure_id, plan in batch:
                if plan is None:
                    records.pop(procedure_id, None)
                else:
                    records[procedure_id] = plan
            changed = [procedure_id for procedure_id, _ in batch]
            compact.track(records, changed)  # type: ignore[arg-type]
            reference.track(records, changed)  # type: ignore[arg-type]
            assert compact.refresh() == reference.refresh()
            assert _book_state(compact) == _book_state(reference)
    # The cases share the two values a completeness case can take.
    shared = {id(case) for charts in compact.charts.values() for _, case in charts.cases()}
    assert len(shared) <= 2
    assert all(
        case.stratum == STRATUM for charts in compact.charts.values() for _, case in charts.cases()
    )
