"""The drift charts of the partitions a worker owns, and what they still have to publish.

The engine tells the monitor which procedures changed each time it settles
a partition's totals; the monitor moves their cases on the site charts.
Charts are refolded on `refresh` (the drift timer, and every scrape), not
per event: the bulk path pays one dictionary update per changed procedure,
and a refold covers whatever arrived since the last one.

Publication is at least once with stable ids: a message leaves the outbox
only when the publisher took it, and after a rebuild each chart's current
episode is announced again (the alerting service dedupes by id).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from uuid import UUID

from spinewatch.domain.drift.events import (
    DriftMessage,
    Pending,
    build,
    latest_only,
    pending,
    sentinel_message,
)
from spinewatch.domain.drift.site_charts import AnyChart, PartitionCharts, SiteCharts, Track
from spinewatch.domain.outcomes.contribution import Contribution
from spinewatch.domain.outcomes.partition import PartitionState
from spinewatch.domain.outcomes.records import ProcedureRecord


@dataclass(frozen=True, slots=True)
class ChartReading:
    """One chart of one site, for the Prometheus gauges."""

    site_id: str
    chart: AnyChart
    track: Track
    in_control: bool


Annotate = Callable[[str, Pending, SiteCharts, DriftMessage], DriftMessage]


class DriftMonitor:
    def __init__(self, charts: tuple[AnyChart, ...], resolve_after_cases: int) -> None:
        self.charts = charts
        self.resolve_after = resolve_after_cases
        self.partitions: dict[int, PartitionCharts] = {}
        self._published: dict[int, set[UUID]] = {}
        # Partitions rebuilt since their last refresh: history not re-announced.
        self._rebuilt: set[int] = set()
        self.outbox: list[tuple[str, DriftMessage]] = []
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
            charts = self.partitions[partition] = PartitionCharts(self.charts)
        charts.track(*noted)

    def rebuild(self, states: dict[int, PartitionState]) -> None:
        self.partitions = {}
        self._changed = {}
        self._published = {p: self._published.get(p, set()) for p in states}
        for partition, state in states.items():
            # Withdrawals too: one queued but unpublished when the previous
            # owner stopped is not lost (the alerting service dedupes by id).
            self.partitions[partition] = PartitionCharts(self.charts)
            self.partitions[partition].recall_withdrawals(state.records)
            self.track(partition, state, state.contributions.keys())
        # An empty partition (a first start) has no history to hold back.
        self._rebuilt = {p for p, state in states.items() if state.records}

    def refresh(self, active_partitions: Collection[int]) -> None:
        """Refold changed sites; queue every message not yet published."""
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
            if partition in self._rebuilt:
                self._rebuilt.discard(partition)
                self._queue(partition, charts, list(charts.sites), latest=True)
            elif moved:
                self._queue(partition, charts, moved, latest=False)

    def _queue(
        self, partition: int, charts: PartitionCharts, sites: list[str], latest: bool
    ) -> None:
        published = self._published.setdefault(partition, set())
        for site_id in sites:
            site = charts.sites[site_id]
            items = list(pending(site_id, site, self.resolve_after))
            if latest:
                items = latest_only(items)
            for item in items:
                if item.message_id not in published:
                    published.add(item.message_id)
                    message = build(item, site)
                    if self.annotate is not None:
                        message = self.annotate(site_id, item, site, message)
                    self.outbox.append((site_id, message))

    def take_outbox(self) -> list[tuple[str, DriftMessage]]:
        taken, self.outbox = self.outbox, []
        return taken

    def requeue(self, unsent: list[tuple[str, DriftMessage]]) -> None:
        """Put back messages the publisher took but could not send, ahead of newer ones."""
        self.outbox[:0] = unsent

    def readings(self, active_partitions: Collection[int]) -> Iterator[ChartReading]:
        for partition in sorted(active_partitions):
            charts = self.partitions.get(partition)
            if charts is None:
                continue
            for site_id, site in sorted(charts.sites.items()):
                yield from self._site_readings(site_id, site)

    def _site_readings(self, site_id: str, site: SiteCharts) -> Iterator[ChartReading]:
        for chart, track in zip(site.charts, site.tracks, strict=True):
            if track.state.cases:
                yield ChartReading(site_id, chart, track, track.in_control(self.resolve_after))
