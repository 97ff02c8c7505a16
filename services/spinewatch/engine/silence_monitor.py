"""The heartbeats of the sites a worker owns, their drift messages and gauges.

The apply agent notes each fact batch it applied (`arrived`: its partition,
its site, the wall clock now); the drift loop judges the sites of the
actively owned partitions on every tick (`take`) and publishes what that
implies with the charts' messages (`OutcomeEngine.refresh_drift`). A
partition no longer owned is forgotten at the next tick: its new owner
starts the sites' timers afresh (`domain/drift/silence.py` says why that
is safe for the alerts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from spinewatch.contracts.drift import DriftSilence
from spinewatch.domain.drift.silence import SilenceRule, SilenceWatch, SiteSilence


class SilenceMonitor:
    def __init__(self, rule: SilenceRule | None, clock: Callable[[], float] = time.time) -> None:
        # None: silence is not watched (no messages, no gauges).
        self.rule = rule
        self.clock = clock
        self.partitions: dict[int, SilenceWatch] = {}
        self.outbox: list[tuple[str, DriftSilence]] = []

    def arrived(self, partition: int, site_id: str) -> None:
        if self.rule is None:
            return
        watch = self.partitions.get(partition)
        if watch is None:
            watch = self.partitions[partition] = SilenceWatch(self.rule)
        message = watch.arrived(site_id, self.clock())
        if message is not None:
            self.outbox.append((site_id, message))

    def take(self, active_partitions: Collection[int]) -> list[tuple[str, DriftSilence]]:
        """Forget partitions no longer owned, judge the rest; every message queued."""
        for partition in set(self.partitions) - set(active_partitions):
            del self.partitions[partition]
        now = self.clock()
        for partition in sorted(active_partitions):
            watch = self.partitions.get(partition)
            if watch is not None:
                self.outbox.extend((m.site_id, m) for m in watch.judge(now))
        taken, self.outbox = self.outbox, []
        return taken

    def readings(self, active_partitions: Collection[int]) -> Iterator[SiteSilence]:
        now = self.clock()
        for partition in sorted(active_partitions):
            watch = self.partitions.get(partition)
            if watch is not None:
                yield from watch.readings(now)


class SilenceCollector(Collector):
    """Per site (the site label only): time since its last event, silent or not."""

    def __init__(self, monitor: SilenceMonitor, active: Callable[[], set[int]]) -> None:
        self.monitor = monitor
        self.active = active

    def collect(self) -> Iterator[GaugeMetricFamily]:
        since = GaugeMetricFamily(
            "spinewatch_site_seconds_since_last_event",
            "Wall-clock seconds since the site's last fact batch reached its worker.",
            labels=["site"],
        )
        silent = GaugeMetricFamily(
            "spinewatch_site_silent",
            "1 while the site is silent: no event for max(multiple x usual gap, floor).",
            labels=["site"],
        )
        threshold = GaugeMetricFamily(
            "spinewatch_site_silence_threshold_seconds",
            "Seconds without an event after which the site is silent (judged sites only).",
            labels=["site"],
        )
        for reading in self.monitor.readings(self.active()):
            since.add_metric([reading.site_id], reading.seconds_since_last)
            silent.add_metric([reading.site_id], 1.0 if reading.silent else 0.0)
            if reading.threshold_s is not None:
                threshold.add_metric([reading.site_id], reading.threshold_s)
        yield since
        yield silent
        yield threshold
