"""One partition's follow-up plans, its sites' clocks, and their completeness charts.

The clock. A follow-up is overdue when its window closed "now"; to keep
replays and rebuilds deterministic, "now" is the site's clinical
watermark: the latest clinical instant its records show (a procedure's
time, or a follow-up's recording time). The same records then give the
same states, charts and signals whenever and however often they are
replayed. A site that stops sending follow-ups but goes on operating moves
its clock and its follow-ups go overdue; a site that stops sending
anything stops its own clock, which the stream-silence alert covers.

Per site, not per partition: in a backfill one site's events may be
applied well ahead of another's in the same partition, and a shared clock
then declared the lagging site's follow-ups missed before they were read
(the end-to-end test caught a steady site signalled that way).

Cases enter a site's chart as its clock passes their window's close (a
heap of pending closes per site), so the bulk path pays one heap push per
scheduled follow-up, and a refold is the checkpointed one of `SiteCharts`.

Readings are cached per site. `summaries` and `lost` run over every plan
of a site, and /metrics reads them every rendering (0.5 s): ~60% of a
rendering's 1.1 s at 50,000 procedures went there. A site's result depends
only on its plans (in the book's order) and its as-of instant, so each site
keeps a version, bumped by every change of its plans (`_set_plan`,
`_drop_plan`: additions, corrections, deaths, retractions, moves between
sites), and its last result is reused while (version, as-of) is unchanged.
The clock is clinical time, moved only by a plan of the site, so a live
trickle recomputes the few sites it touched. Recomputing walks the site's
plans in the same order as before, so the floats are the same.

Pure: no I/O, no wall clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

from spinewatch.domain.drift.chart_fold import CaseKey, ChartCase
from spinewatch.domain.drift.design import MonitoredChart, Stratum
from spinewatch.domain.drift.site_charts import SiteCharts
from spinewatch.domain.followup.chart import (
    MIN_HISTORY_DAYS,
    MISSED,
    RECEIVED,
    STRATUM,
    completeness_chart,
    volume_step,
)
from spinewatch.domain.followup.completeness import (
    ProcedurePlan,
    TimepointSummary,
    lost_tallies,
    plan_of,
    summarise,
)
from spinewatch.domain.followup.schedule import DAY_US, Window, closes_at, state_of
from spinewatch.domain.outcomes.contribution import AggregateKey, Tally
from spinewatch.domain.outcomes.records import ProcedureRecord

# The only two cases a completeness chart has: shared, not one object per follow-up.
_CASES = {outcome: ChartCase(STRATUM, (outcome,)) for outcome in (RECEIVED, MISSED)}


def _case_key(window: Window, procedure_us: int, procedure_id: bytes, index: int) -> CaseKey:
    """A scheduled follow-up's case: when it closes, and its procedure and window index."""
    return (closes_at(window, procedure_us), procedure_id + bytes((index,)))


@dataclass(frozen=True, slots=True)
class CompletenessDesign:
    windows: tuple[Window, ...]
    expected_completeness: float
    odds_ratio: float
    arl0_months: float


class FollowupBook:
    def __init__(self, design: CompletenessDesign) -> None:
        self.design = design
        self.plans: dict[bytes, ProcedurePlan] = {}
        # Per site: its plans, in the order of `plans` (a move between sites
        # re-appends in both, see `_set_plan`), and a version bumped by each change.
        self._site_plans: dict[str, dict[bytes, ProcedurePlan]] = {}
        self._versions: dict[str, int] = {}
        # Per site: (version, as-of, result) of the last reading.
        self._summaries: dict[str, tuple[int, int, dict[str, TimepointSummary]]] = {}
        self._lost: dict[str, tuple[int, int, dict[AggregateKey, Tally]]] = {}
        self.clocks: dict[str, int] = {}  # per site: its clinical watermark
        # Per site: every closed scheduled follow-up, as a chart case; and the
        # site's chart once its volume is known.
        self.cases: dict[str, dict[CaseKey, tuple[int, int]]] = {}
        self.charts: dict[str, SiteCharts] = {}
        self._steps: dict[str, float] = {}
        self._first_close: dict[str, int] = {}  # per site: its earliest case's close
        # Per site: (close, procedure id, window index) not yet closed.
        self._closing: dict[str, list[tuple[int, bytes, int]]] = {}
        self._records: Mapping[bytes, ProcedureRecord] = {}
        self._changed: set[bytes] = set()
        self._clock_moved_back: set[str] = set()

    def track(self, records: Mapping[bytes, ProcedureRecord], changed: Collection[bytes]) -> None:
        """Note changed procedures; their plans and cases move on `refresh`."""
        self._records = records
        self._changed.update(changed)

    def refresh(self) -> list[str]:
        """Bring plans, clock and charts up to date; the sites whose charts moved."""
        touched: set[str] = set()
        if self._changed:
            changed, self._changed = self._changed, set()
            for procedure_id in changed:
                self._replan(procedure_id, touched)
            if self._clock_moved_back:  # a retraction or correction took the latest instant
                self._reset_clocks(self._clock_moved_back)
                self._clock_moved_back = set()
        for site_id, clock in self.clocks.items():
            self._close_until(site_id, clock, touched)
        for site_id in list(self.cases):
            self._redesign(site_id, touched)
        return [site for site in sorted(touched) if site in self.charts and self._refold(site)]

    def _refold(self, site_id: str) -> bool:
        return self.charts[site_id].refresh()

    def _replan(self, procedure_id: bytes, touched: set[str]) -> None:
        record = self._records.get(procedure_id)
        plan = None if record is None else plan_of(record)
        old = self.plans.get(procedure_id)
        if plan == old:
            return
        if old is not None and old.latest_us >= self.clocks.get(old.site_id, 0):
            self._clock_moved_back.add(old.site_id)
        if old is not None:
            # Its cases so far: the keys follow from the plan they closed
            # under (a map of placed keys per procedure cost 250 bytes each).
            held = self.cases.get(old.site_id, {})
            for index, window in enumerate(self.design.windows):
                key = _case_key(window, old.procedure_us, procedure_id, index)
                if key in held:
                    self._remove(old.site_id, key)
                    touched.add(old.site_id)
        if plan is None:
            self._drop_plan(procedure_id)
            return
        self._set_plan(procedure_id, plan)
        site_id = plan.site_id
        if plan.latest_us > self.clocks.get(site_id, -1):
            self.clocks[site_id] = plan.latest_us
        closing = self._closing.setdefault(site_id, [])
        for index, window in enumerate(self.design.windows):
            close = closes_at(window, plan.procedure_us)
            heapq.heappush(closing, (close, procedure_id, index))

    def _set_plan(self, procedure_id: bytes, plan: ProcedurePlan) -> None:
        old = self.plans.get(procedure_id)
        if old is not None and old.site_id != plan.site_id:
            # Out of the old site, and to the end of `plans` as of the new
            # site's: both orders stay the same.
            self._drop_plan(procedure_id)
        self.plans[procedure_id] = plan
        self._site_plans.setdefault(plan.site_id, {})[procedure_id] = plan
        self._versions[plan.site_id] = self._versions.get(plan.site_id, 0) + 1

    def _drop_plan(self, procedure_id: bytes) -> None:
        old = self.plans.pop(procedure_id, None)
        if old is None:
            return
        site_plans = self._site_plans[old.site_id]
        del site_plans[procedure_id]
        if not site_plans:  # the site is gone from the readings (its version stays)
            del self._site_plans[old.site_id]
            self._summaries.pop(old.site_id, None)
            self._lost.pop(old.site_id, None)
        self._versions[old.site_id] = self._versions.get(old.site_id, 0) + 1

    def _reset_clocks(self, sites: set[str]) -> None:
        latest: dict[str, int] = {}
        for plan in self.plans.values():
            if plan.site_id in sites and plan.latest_us > latest.get(plan.site_id, -1):
                latest[plan.site_id] = plan.latest_us
        for site_id in sites:
            if site_id in latest:
                self.clocks[site_id] = latest[site_id]
            else:
                self.clocks.pop(site_id, None)

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
                continue  # retracted or moved since it was scheduled
            key: CaseKey = (close, procedure_id + bytes((index,)))
            if key in self.cases.get(site_id, ()):
                continue  # scheduled twice (a replan that kept its time): placed once
            received = window.timepoint in plan.received
            if plan.censored and not received:
                continue  # not expected of a patient who died
            self._put(plan.site_id, key, RECEIVED if received else MISSED)
            touched.add(plan.site_id)

    def _put(self, site_id: str, key: CaseKey, outcome: tuple[int, int]) -> None:
        self.cases.setdefault(site_id, {})[key] = outcome
        first = self._first_close.get(site_id)
        if first is None or key[0] < first:
            self._first_close[site_id] = key[0]
        charts = self.charts.get(site_id)
        if charts is not None:
            charts.put(key, _CASES[outcome])

    def _remove(self, site_id: str, key: CaseKey) -> None:
        cases = self.cases.get(site_id, {})
        cases.pop(key, None)
        if self._first_close.get(site_id) == key[0]:
            self._first_close.pop(site_id)
            if cases:
                self._first_close[site_id] = min(cases)[0]
        charts = self.charts.get(site_id)
        if charts is not None:
            charts.remove(key)

    def _redesign(self, site_id: str, touched: set[str]) -> None:
        """Design (or re-design) the site's chart when its volume left its step."""
        cases = self.cases[site_id]
        first = self._first_close.get(site_id)
        clock = self.clocks.get(site_id)
        if not cases or first is None or clock is None:
            return
        months = (clock - first) / DAY_US / MIN_HISTORY_DAYS
        if months < 1.0:
            return
        step = volume_step(len(cases) / months)
        if self._steps.get(site_id) == step:
            return
        self._steps[site_id] = step
        design = self.design
        chart = completeness_chart(
            design.expected_completeness, design.odds_ratio, design.arl0_months, step
        )
        charts = SiteCharts((chart,))
        for key, outcome in cases.items():
            charts.put(key, _CASES[outcome])
        self.charts[site_id] = charts
        touched.add(site_id)

    # --- readings -------------------------------------------------------------

    def site_plans(self) -> dict[str, list[ProcedurePlan]]:
        return {site_id: list(plans.values()) for site_id, plans in self._site_plans.items()}

    def summaries(
        self, as_of: Callable[[int], int] | None = None, sites: Collection[str] | None = None
    ) -> Iterator[tuple[str, dict[str, TimepointSummary]]]:
        """Per site (or only `sites`): completeness and Clark's C per timepoint, as
        of its clock (or of `as_of(clock)`). Shared with the cache: read only."""
        for site_id in sorted(self._site_plans):
            if sites is not None and site_id not in sites:
                continue
            clock = self.clocks[site_id]
            instant = as_of(clock) if as_of else clock
            version = self._versions[site_id]
            cached = self._summaries.get(site_id)
            if cached is None or cached[0] != version or cached[1] != instant:
                plans = self._site_plans[site_id].values()
                cached = (version, instant, summarise(plans, self.design.windows, instant))
                self._summaries[site_id] = cached
            yield site_id, cached[2]

    def lost(self) -> dict[AggregateKey, Tally]:
        """Per cohort and operator: lost follow-ups (tallies shared with the cache: read only)."""
        found: dict[AggregateKey, Tally] = {}
        for site_id, plans in self._site_plans.items():
            clock, version = self.clocks[site_id], self._versions[site_id]
            cached = self._lost.get(site_id)
            if cached is None or cached[0] != version or cached[1] != clock:
                cached = (version, clock, lost_tallies(plans.values(), self.design.windows, clock))
                self._lost[site_id] = cached
            found |= cached[2]
        return found

    def site_chart(self, site_id: str) -> MonitoredChart | None:
        charts = self.charts.get(site_id)
        chart = charts.charts[0] if charts is not None else None
        return chart if isinstance(chart, MonitoredChart) else None

    def lost_between(
        self,
        site_id: str,
        timepoint: str,
        first: CaseKey,
        last: CaseKey,
        strata: Iterable[Stratum],
    ) -> list[Stratum]:
        """Strata of the lost follow-ups at `timepoint` of the site's procedures in
        [first, last] (procedure order), of patients with a pre-procedure VAS."""
        window = next((w for w in self.design.windows if w.timepoint == timepoint), None)
        clock = self.clocks.get(site_id)
        if window is None or clock is None:
            return []
        charted = set(strata)
        found = []
        for procedure_id, plan in self.plans.items():
            stratum = (plan.procedure_type, plan.indication)
            if plan.site_id != site_id or plan.pre_vas is None or stratum not in charted:
                continue
            if not first <= (plan.procedure_us, procedure_id) <= last:
                continue
            received = plan.received.get(timepoint)
            state = state_of(window, plan.procedure_us, received, clock, censored=plan.censored)
            if state == "lost":
                found.append(stratum)
        return found
