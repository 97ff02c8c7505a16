"""Follow-up completeness in the worker: one book per owned partition, and what it publishes.

Beside the drift monitor and on the same rhythm: the engine notes changed
procedures when it settles, and `refresh` (the drift timer, every scrape)
moves plans, clock and charts. Messages go into the drift monitor's
outbox, so they are published, retried and re-announced after a rebuild
exactly like the outcome charts' (same stable ids, same alerting path):

* `drift.signalled` / `drift.in_control` of each site's completeness chart,
  naming the local target instead of a literature citation;
* `drift.completeness`, one per site each time its clinical clock enters
  a new week (ISO, Monday 00:00 UTC), as of that Monday.

It also adds the pessimistic figures to the VAS charts' signals.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid5

from spinewatch.contracts.drift import (
    DriftCompleteness,
    DriftMessage,
    DriftSignalled,
    LocalTarget,
    TimepointCompleteness,
)
from spinewatch.contracts.vocabulary import FollowupTimepoint
from spinewatch.domain.drift.events import Pending, build, latest_only, pending
from spinewatch.domain.drift.site_charts import SiteCharts
from spinewatch.domain.drift.vas_drift import MonitoredVasChart
from spinewatch.domain.followup.book import CompletenessDesign, FollowupBook
from spinewatch.domain.followup.chart import EXPECTED_SETTING
from spinewatch.domain.followup.completeness import TimepointSummary
from spinewatch.domain.followup.schedule import DAY_US
from spinewatch.domain.followup.vas_pessimism import pessimistic_vas
from spinewatch.domain.outcomes.aggregates import add_into
from spinewatch.domain.outcomes.contribution import AggregateKey, Tally
from spinewatch.domain.outcomes.partition import PartitionState
from spinewatch.engine.drift_monitor import ChartReading, DriftMonitor

_NAMESPACE = UUID("0b7e4c1e-4f55-4c1a-9a57-3f1f8e1c2d77")
_WEEK_US = 7 * DAY_US
# 1970-01-01 was a Thursday: Mondays fall 4 days after the epoch's week boundary.
_MONDAY_OFFSET_US = 4 * DAY_US
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def week_start(instant_us: int) -> int:
    """The Monday 00:00 UTC at or before the instant (epoch microseconds)."""
    return (instant_us - _MONDAY_OFFSET_US) // _WEEK_US * _WEEK_US + _MONDAY_OFFSET_US


class FollowupMonitor:
    def __init__(
        self, design: CompletenessDesign, drift: DriftMonitor, resolve_after_cases: int
    ) -> None:
        self.design = design
        self.drift = drift
        self.resolve_after = resolve_after_cases
        self.books: dict[int, FollowupBook] = {}
        self._published: dict[int, set[UUID]] = {}
        self._rebuilt: set[int] = set()
        self._reported_week: dict[str, int] = {}  # per site
        drift.annotate = self._annotate_vas

    def track(self, partition: int, state: PartitionState, changed: Collection[bytes]) -> None:
        if changed:
            self._book(partition).track(state.records, changed)

    def _book(self, partition: int) -> FollowupBook:
        book = self.books.get(partition)
        if book is None:
            book = self.books[partition] = FollowupBook(self.design)
        return book

    def rebuild(self, states: dict[int, PartitionState]) -> None:
        self.books = {}
        self._published = {p: self._published.get(p, set()) for p in states}
        for partition, state in states.items():
            self._book(partition).track(state.records, state.records.keys())
        self._rebuilt = {p for p, state in states.items() if state.records}

    def refresh(self, active_partitions: Collection[int]) -> None:
        """Move every owned book; queue the messages not yet published."""
        for partition in active_partitions:
            book = self.books.get(partition)
            if book is None:
                continue
            moved = book.refresh()
            if partition in self._rebuilt:
                self._rebuilt.discard(partition)
                self._queue(partition, book, sorted(book.charts), latest=True)
            elif moved:
                self._queue(partition, book, moved, latest=False)
            self._report(book)

    def _queue(self, partition: int, book: FollowupBook, sites: list[str], latest: bool) -> None:
        published = self._published.setdefault(partition, set())
        for site_id in sites:
            charts = book.charts[site_id]
            items = list(pending(site_id, charts, self.resolve_after))
            if latest:
                items = latest_only(items)
            for item in items:
                if item.message_id not in published:
                    published.add(item.message_id)
                    self.drift.outbox.append((site_id, self._message(item, charts)))

    def _message(self, item: Pending, charts: SiteCharts) -> DriftMessage:
        message = build(item, charts)
        if not isinstance(message, DriftSignalled):
            return message
        expected = self.design.expected_completeness
        target = LocalTarget(
            setting=EXPECTED_SETTING,
            expected=expected,
            p0=1.0 - expected,
            described=(
                "expected follow-up completeness, a local target: the seeds give no figure "
                "(registries report 25-30% non-response at one year)"
            ),
        )
        return message.model_copy(update={"local_target": target})

    def _report(self, book: FollowupBook) -> None:
        """A completeness message per site when its clinical clock enters a new week."""
        entered = {
            site_id: week
            for site_id, clock in book.clocks.items()
            if self._reported_week.get(site_id) != (week := week_start(clock))
        }
        if not entered:
            return
        self._reported_week.update(entered)
        for site_id, summaries in book.summaries(week_start, sites=entered):
            as_of = (_EPOCH + timedelta(microseconds=entered[site_id])).date()
            report = DriftCompleteness(
                event_type="drift.completeness",
                schema_version=1,
                report_id=uuid5(_NAMESPACE, f"{site_id}|{as_of.isoformat()}"),
                site_id=site_id,
                as_of=as_of,
                expected_completeness=self.design.expected_completeness,
                timepoints=tuple(_timepoint(s) for s in summaries.values()),
            )
            self.drift.outbox.append((site_id, report))

    def _annotate_vas(
        self, site_id: str, item: Pending, charts: SiteCharts, message: DriftMessage
    ) -> DriftMessage:
        """A VAS signal, with its window's mean change if lost follow-ups had no relief."""
        chart = charts.charts[item.chart_index]
        if not isinstance(message, DriftSignalled) or not isinstance(chart, MonitoredVasChart):
            return message
        signal = item.signal
        window = charts.window(item.chart_index, signal.change_at, signal.at)
        lost = []
        for book in self.books.values():
            if site_id in book.cases or any(p.site_id == site_id for p in book.plans.values()):
                lost = book.lost_between(
                    site_id, chart.timepoint, signal.change_at, signal.at, chart.strata
                )
                break
        mean, holds = pessimistic_vas(chart, window, lost)
        return message.model_copy(
            update={"pessimistic_mean_change": mean, "holds_under_pessimistic": holds}
        )

    # --- what /metrics reads ---------------------------------------------------

    def readings(self, active_partitions: Collection[int]) -> Iterator[ChartReading]:
        for partition in sorted(active_partitions):
            book = self.books.get(partition)
            if book is None:
                continue
            for site_id, charts in sorted(book.charts.items()):
                track = charts.tracks[0]
                if track.state.cases:
                    in_control = track.in_control(self.resolve_after)
                    yield ChartReading(site_id, charts.charts[0], track, in_control)

    def summaries(
        self, active_partitions: Collection[int]
    ) -> Iterator[tuple[str, dict[str, TimepointSummary]]]:
        for partition in sorted(active_partitions):
            book = self.books.get(partition)
            if book is not None:
                yield from book.summaries()

    def lost(self, active_partitions: Collection[int]) -> dict[AggregateKey, Tally]:
        summed: dict[AggregateKey, Tally] = {}
        for partition in active_partitions:
            book = self.books.get(partition)
            if book is not None:
                for key, tally in book.lost().items():
                    add_into(summed.setdefault(key, {}), tally)
        return summed


def _timepoint(summary: TimepointSummary) -> TimepointCompleteness:
    counts = summary.counts
    return TimepointCompleteness(
        timepoint=FollowupTimepoint(summary.timepoint),
        pending=counts.get("pending", 0),
        due=counts.get("due", 0),
        received=counts.get("received", 0),
        received_late=counts.get("received_late", 0),
        overdue=counts.get("overdue", 0),
        lost=counts.get("lost", 0),
        censored=counts.get("censored", 0),
        closed=summary.closed,
        completeness=summary.completeness,
        clarks_c=summary.clarks_c,
    )
