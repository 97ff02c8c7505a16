"""The drift charts of the partitions a worker owns, and what they still have to publish.

The engine tells the monitor which procedures changed each time it settles
a partition's totals; the monitor moves their cases on the site charts.
Charts are refolded on `refresh` (the drift timer, and every scrape), not
per event: the bulk path pays one dictionary update per changed procedure,
and a refold covers whatever arrived since the last one.

Publication is at least once with stable ids: a message leaves the outbox
only when the publisher took it, and after a rebuild each chart's current
episode is announced again (the alerting service dedupes by id).

Per-site designs (`domain/drift/site_design.py`). With a `SiteDesigner`,
each site's charts take limits designed for its own volume and case mix.
A site's inputs are measured at most every `design_every_s` (a pass over
its cases), and a calibration not cached runs on the designer's thread:
meanwhile the site keeps its previous design and publishes under it. A
site never designed yet publishes nothing until its first design is in
(its provisional design is usually cached at start-up, so that is the
next refresh). A new design changes h and so every signal id of the
chart: the chart is refolded, the change recorded (`drift.redesigned`),
and only each chart's latest episode re-announced, as after a rebuild.

Look-back lists. Every `drift.signalled` the monitor queues comes with its
look-back list (`domain/drift/lookback.py`) in `lookbacks`, published on
its own topic by the same loop, under the same signal id.

Operator resets (`contracts/control.py`). `apply_reset` takes each reset
once (by id), for any site, owned or not (a rebalance may bring it), and
restarts the chart from its first case after the reset on the next
refresh; the chart is then in control, so its episode's `drift.in_control`
goes out. Resets are facts on a topic every worker reads from the start:
until the worker has read it to the end it had at start (`ready`, set by
the control reader), `refresh` folds and announces nothing, so a rebuilt
chart never announces an episode a reset has ended. A rebuilt worker
re-announces only episodes still open after the chart's last reset (an
ended one: its return to control, never its signal).
"""

from __future__ import annotations

import time
from bisect import insort
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import UUID

from spinewatch.contracts.control import ChartReset
from spinewatch.contracts.drift import DriftMessage
from spinewatch.contracts.lookback import DriftLookback
from spinewatch.domain.drift.events import (
    Pending,
    build,
    latest_only,
    pending,
    redesign_message,
    sentinel_message,
)
from spinewatch.domain.drift.lookback import lookback
from spinewatch.domain.drift.site_charts import AnyChart, PartitionCharts, SiteCharts, Track
from spinewatch.domain.drift.site_design import (
    AnyDesign,
    SiteChartPlan,
    designed_chart,
)
from spinewatch.domain.outcomes.contribution import Contribution
from spinewatch.domain.outcomes.partition import PartitionState
from spinewatch.domain.outcomes.records import ProcedureRecord
from spinewatch.engine.site_designs import SiteDesigner

DESIGN_EVERY_S = 2.0


@dataclass(frozen=True, slots=True)
class ChartReading:
    """One chart of one site, for the Prometheus gauges."""

    site_id: str
    chart: AnyChart
    track: Track
    in_control: bool
    plan: SiteChartPlan | None = None  # None: no per-site design (a fixed chart)
    resets: int = 0  # operator resets of this chart


SiteRef = tuple[int, str]  # (partition, site)
# What became of a reset: taken now, known already, or naming no chart of this worker.
ResetOutcome = Literal["applied", "duplicate", "unknown_chart"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


Annotate = Callable[[str, Pending, SiteCharts, DriftMessage], DriftMessage]


class DriftMonitor:
    def __init__(
        self,
        charts: tuple[AnyChart, ...],
        resolve_after_cases: int,
        designer: SiteDesigner | None = None,
        *,
        design_every_s: float = DESIGN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.charts = charts
        self.resolve_after = resolve_after_cases
        self.designer = designer
        self._design_every_s, self._clock = design_every_s, clock
        # Per site: the plans its charts are designed for now; per
        # partition, the sites moved since they were last measured.
        self._plans: dict[SiteRef, tuple[SiteChartPlan, ...]] = {}
        self._stale: dict[int, set[str]] = {}
        self._measure_after: dict[int, float] = {}
        # Signals of a redesigned chart's history: never published (new ids
        # for episodes paged, or not, under the previous design).
        self.suppressed: set[UUID] = set()
        # Per (site, chart): whether the last message published for it opened
        # an episode (a signal) or closed one (its return to control).
        self._open: dict[tuple[str, int], bool] = {}
        self.partitions: dict[int, PartitionCharts] = {}
        self._published: dict[int, set[UUID]] = {}
        # Partitions rebuilt since their last refresh: history not re-announced.
        self._rebuilt: set[int] = set()
        self.outbox: list[tuple[str, DriftMessage]] = []
        # The look-back list of every signal queued in `outbox`, keyed by site.
        self.lookbacks: list[tuple[str, DriftLookback]] = []
        # Operator resets taken, by id; per site and chart index, their instants
        # (shared with every PartitionCharts: new site charts start with them).
        self._resets: dict[UUID, ChartReset] = {}
        self._restarts: dict[str, dict[int, list[int]]] = {}
        # False until the control topic was read to its end at start: nothing
        # is folded or announced before every reset is known.
        self.ready = True
        # Per partition: its records' contributions, the procedures changed
        # since the last refresh, and the records (sentinel generations).
        self._changed: dict[
            int,
            tuple[Mapping[bytes, Contribution], set[bytes], Mapping[bytes, ProcedureRecord]],
        ] = {}
        # Adds to a message what the charts alone do not know (the follow-up
        # monitor: a VAS signal's figures under the pessimistic assumption).
        self.annotate: Annotate | None = None

    def track(self, partition: int, state: PartitionState, changed: Collection[bytes]) -> None:
        """Note procedures whose contributions changed; their cases move on `refresh`.

        A replay settles a procedure several times (its follow-ups arrive
        weeks of clinical time apart); noting the ids and moving each case
        once per refresh does that work once per tick instead of once per settle.
        """
        if not changed:
            return  # (with no chart monitored, sentinels are still found)
        noted = self._changed.get(partition)
        if noted is None or noted[0] is not state.contributions:
            self._move_cases(partition)
            noted = self._changed[partition] = (state.contributions, set(), state.records)
        noted[1].update(changed)

    def _move_cases(self, partition: int) -> None:
        noted = self._changed.pop(partition, None)
        if noted is None:
            return
        charts = self.partitions.get(partition)
        if charts is None:
            charts = self.partitions[partition] = self._partition_charts()
        charts.track(*noted)

    def _partition_charts(self) -> PartitionCharts:
        return PartitionCharts(self.charts, resets=self._restarts)

    def apply_reset(self, reset: ChartReset) -> ResetOutcome:
        """Take an operator reset (idempotent: by id, and by instant per chart)."""
        if reset.reset_id in self._resets:
            return "duplicate"
        index = next(
            (
                j
                for j, chart in enumerate(self.charts)
                if chart.metric_name == reset.metric and chart.direction == reset.direction
            ),
            None,
        )
        if index is None:
            return "unknown_chart"
        self._resets[reset.reset_id] = reset
        instant = (reset.effective_after - _EPOCH) // _MICROSECOND
        instants = self._restarts.setdefault(reset.site_id, {}).setdefault(index, [])
        if instant not in instants:
            insort(instants, instant)
        for charts in self.partitions.values():
            site = charts.sites.get(reset.site_id)
            if site is not None:
                site.restart(index, instant)
        return "applied"

    def rebuild(self, states: dict[int, PartitionState]) -> None:
        self.partitions = {}
        self._changed = {}
        self._plans, self._stale, self._measure_after = {}, {}, {}
        if self.designer is not None:
            self.designer.forget()
        self._published = {p: self._published.get(p, set()) for p in states}
        for partition, state in states.items():
            # Withdrawals too: one queued but unpublished when the previous
            # owner stopped is not lost (the alerting service dedupes by id).
            self.partitions[partition] = self._partition_charts()
            self.partitions[partition].recall_withdrawals(state.records)
            self.track(partition, state, state.contributions.keys())
        # An empty partition (a first start) has no history to hold back.
        self._rebuilt = {p for p, state in states.items() if state.records}

    def refresh(self, active_partitions: Collection[int]) -> None:
        """Refold changed sites; queue every message not yet published."""
        if not self.ready:
            return  # resets still being read: a fold now could announce an ended episode
        for partition in active_partitions:
            self._move_cases(partition)
            charts = self.partitions.get(partition)
            if charts is None:
                continue
            # Every sentinel found or withdrawn, after a rebuild too: the
            # alerting service dedupes by id, so a re-announcement never re-pages.
            for case in charts.take_sentinels():
                self.outbox.append((case.site_id, sentinel_message(case)))
            moved = charts.refresh()
            rebuilt = partition in self._rebuilt
            self._rebuilt.discard(partition)
            if self.designer is None:
                if rebuilt:
                    self._queue(partition, charts, list(charts.sites), latest=True)
                elif moved:
                    self._queue(partition, charts, moved, latest=False)
                continue
            stale = self._stale.setdefault(partition, set())
            stale.update(charts.sites if rebuilt else moved)
            redesigned = dict(self._redesign(partition, charts, self.designer))
            every = set(range(len(self.charts)))
            published = self._published.setdefault(partition, set())
            for site_id, site in charts.sites.items():
                if (partition, site_id) not in self._plans:
                    continue  # held: no design of its own yet
                if rebuilt:
                    # A rebuilt worker cannot know what was published before:
                    # each chart's current episode is re-announced (ids dedupe
                    # it) and the history is never sent again, even later.
                    self._queue_site(published, site_id, site, every, suppress=True)
                elif site_id in redesigned:
                    # New h, new ids: the charts redesigned announce their
                    # latest episode only, and their history is never paged.
                    # A chart whose alert was resolved and whose latest episode
                    # is over at the new h too announces nothing: that episode
                    # is the same drift, paged and resolved at the old h (it
                    # paged again, FIRING then RESOLVED, when a redesign came
                    # after the resolution: tests/test_alerting_e2e.py under load).
                    latest = redesigned[site_id]
                    settled = {
                        j
                        for j in latest
                        if self._open.get((site_id, j)) is False
                        and site.tracks[j].in_control(self.resolve_after)
                    }
                    self._queue_site(
                        published, site_id, site, latest, suppress=True, settled=settled
                    )
                elif site_id in moved:
                    self._queue_site(published, site_id, site, set(), suppress=False)

    def _redesign(
        self, partition: int, charts: PartitionCharts, designer: SiteDesigner
    ) -> Iterator[tuple[str, set[int]]]:
        """Sites given a new design now, with the charts whose design changed."""
        # Snapshot the stale sites (throttled) for the design thread; apply
        # every site design that is ready.
        now = self._clock()
        stale = self._stale[partition]
        if stale and now >= self._measure_after.get(partition, 0.0):
            self._measure_after[partition] = now + self._design_every_s
            for site_id in sorted(stale):
                site = charts.sites.get(site_id)
                # A site whose every case was voided keeps its design: no
                # history to measure, and nothing on its charts to page.
                if site is not None and len(site):
                    designer.request((partition, site_id), site_id, self.charts, site.cases())
            stale.clear()
        for site_id, site in charts.sites.items():
            ref = (partition, site_id)
            ready = designer.take(ref)
            if ready is None:
                continue  # not asked, or calibrating: the site keeps its previous design
            plans, designs = ready
            if self._plans.get(ref) != plans:
                yield site_id, self._apply(ref, site, plans, list(designs))

    def _apply(
        self,
        ref: SiteRef,
        site: SiteCharts,
        plans: tuple[SiteChartPlan, ...],
        designs: list[AnyDesign],
    ) -> set[int]:
        previous = self._plans.get(ref)
        charts = [designed_chart(c, d) for c, d in zip(self.charts, designs, strict=True)]
        old_limits = [c.design.limit if previous else None for c in site.charts]
        site.redesign(charts)
        site.refresh()
        self._plans[ref] = plans
        changed = set()
        for j, (chart, plan) in enumerate(zip(charts, plans, strict=True)):
            if previous is None or previous[j] != plan:
                changed.add(j)
                message = redesign_message(ref[1], chart, plan, old_limits[j])
                self.outbox.append((ref[1], message))
        return changed

    def _queue(
        self, partition: int, charts: PartitionCharts, sites: list[str], latest: bool
    ) -> None:
        published = self._published.setdefault(partition, set())
        every = set(range(len(self.charts))) if latest else set()
        for site_id in sites:
            self._queue_site(published, site_id, charts.sites[site_id], every, suppress=latest)

    def _queue_site(
        self,
        published: set[UUID],
        site_id: str,
        site: SiteCharts,
        latest_of: set[int],
        *,
        suppress: bool,
        settled: Collection[int] = (),
    ) -> None:
        """Queue the site's unpublished messages; of the charts in `latest_of`, only
        the latest episode (and, with `suppress`, the rest is never published);
        of the charts `settled`, none."""
        items = list(pending(site_id, site, self.resolve_after))
        if latest_of:
            keep = {i.message_id for i in latest_only(items)}
            # An episode an operator reset ended is over: its signal is never
            # announced again, only its return to control.
            keep -= {
                i.message_id
                for i in items
                if not i.resolved and site.tracks[i.chart_index].restart_after(i.signal)
            }
            keep -= {i.message_id for i in items if i.chart_index in settled}
            history = [i for i in items if i.chart_index in latest_of and i.message_id not in keep]
            if suppress:
                published.update(i.message_id for i in history)
                self.suppressed.update(i.message_id for i in history)
            dropped = {i.message_id for i in history}
            items = [i for i in items if i.message_id not in dropped]
        for item in items:
            if item.message_id not in published:
                published.add(item.message_id)
                self._open[(site_id, item.chart_index)] = not item.resolved
                message = build(item, site)
                if self.annotate is not None:
                    message = self.annotate(site_id, item, site, message)
                if not item.resolved:
                    cases = lookback(site_id, site, item.chart_index, item.signal, item.message_id)
                    self.lookbacks.append((site_id, cases))
                self.outbox.append((site_id, message))

    def designing(self) -> bool:
        """Sites waiting to be measured or designed: their charts may still change."""
        if self.designer is None:
            return False
        return self.designer.busy() or any(self._stale.values())

    def take_outbox(self) -> list[tuple[str, DriftMessage]]:
        taken, self.outbox = self.outbox, []
        return taken

    def requeue(self, unsent: list[tuple[str, DriftMessage]]) -> None:
        """Put back messages the publisher took but could not send, ahead of newer ones."""
        self.outbox[:0] = unsent

    def take_lookbacks(self) -> list[tuple[str, DriftLookback]]:
        taken, self.lookbacks = self.lookbacks, []
        return taken

    def requeue_lookbacks(self, unsent: list[tuple[str, DriftLookback]]) -> None:
        self.lookbacks[:0] = unsent

    def resets_of(self, site_id: str, chart_index: int) -> int:
        """Operator resets known for one chart of a site."""
        return len(self._restarts.get(site_id, {}).get(chart_index, ()))

    def readings(self, active_partitions: Collection[int]) -> Iterator[ChartReading]:
        for partition in sorted(active_partitions):
            charts = self.partitions.get(partition)
            if charts is None:
                continue
            for site_id, site in sorted(charts.sites.items()):
                plans = self._plans.get((partition, site_id))
                yield from self._site_readings(site_id, site, plans)

    def _site_readings(
        self, site_id: str, site: SiteCharts, plans: tuple[SiteChartPlan, ...] | None
    ) -> Iterator[ChartReading]:
        for j, (chart, track) in enumerate(zip(site.charts, site.tracks, strict=True)):
            if track.state.cases:
                plan = plans[j] if plans else None
                in_control = track.in_control(self.resolve_after)
                resets = self.resets_of(site_id, j)
                yield ChartReading(site_id, chart, track, in_control, plan, resets)
