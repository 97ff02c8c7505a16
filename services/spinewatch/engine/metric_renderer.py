"""The cohort, drift and follow-up metrics, rendered off the scrape.

Their collectors (`engine/metrics.py`, `engine/silence_monitor.py`) settle
whatever changed, refold the charts and read every cohort and follow-up:
measured at 50,000 procedures, one pass took 1.4 s on a loaded 2-core
machine (most of it follow-up completeness, which reads every procedure,
and writing ~15,000 samples), and the scrape that ran it took 3.5 s
(issue 20: 309 ms). A scrape that slow times out in Prometheus and holds
the event loop while it runs.

So a supervised loop renders them every `interval_s` into text, and
/metrics serves the last rendering next to the worker's own counters and
health gauges, which stay live (`adapters/http.py`): a scrape costs the
same at 1,000 or 1,000,000 procedures. The rendering's age is exported
(`spinewatch_metrics_render_age_seconds`), and health stays honest: a
render that raises or stops making progress turns the loop's check red
(the supervisor's heartbeat), and readiness waits for the first rendering.

Pacing: the loop waits at least `PACE` times its last render before the
next (and at most a third of its staleness limit), so however large the
state grows the rendering holds the event loop a bounded share of the time
(1 / (1 + PACE)); freshness then degrades with the render's cost, visibly
in the age gauge, rather than ingest stalling.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString as _untyped_go_float

from spinewatch.runtime.health import Check
from spinewatch.runtime.supervisor import Heartbeat, LoopBody

PACE = 3.0


def render_stale_after_s(interval_s: float) -> float:
    """How long the render loop may go without a rendering before its check is red."""
    return max(5.0, 50 * interval_s)


class MetricRenderer:
    def __init__(
        self,
        live: CollectorRegistry,
        interval_s: float,
        *,
        covers: Callable[[], float] = lambda: 0.0,
        rebuilds: Callable[[], float] = lambda: 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The slow collectors register here, never on the scraped registry.
        self.registry = CollectorRegistry(auto_describe=False)
        self.interval_s = interval_s
        self.stale_after_s = render_stale_after_s(interval_s)
        self._clock = clock
        # A progress count (events applied) as of the last rendering: a
        # reader compares it with the live count to know the page covers it.
        self._covers = covers
        self.covered = 0.0
        # State rebuilds (recoveries after a rebalance or a restart) as of the
        # last rendering: a page rendered before the latest rebuild shows the
        # partitions as they were before it (seen in test_lookback_reset_e2e:
        # a restarted worker ready with a page lacking its recovered charts).
        self._rebuilds = rebuilds
        self.rendered_rebuilds = 0.0
        self.body = b""
        self.rendered_at: float | None = None
        self.took_s = 0.0
        self.error = ""
        age = Gauge(
            "spinewatch_metrics_render_age_seconds",
            "Seconds since the cohort, drift and follow-up metrics on this page were rendered.",
            registry=live,
        )
        age.set_function(self.age_s)
        took = Gauge(
            "spinewatch_metrics_render_seconds",
            "How long the last rendering of the cohort, drift and follow-up metrics took.",
            registry=live,
        )
        took.set_function(lambda: self.took_s)
        covered = Gauge(
            "spinewatch_metrics_render_events_applied",
            "spinewatch_events_applied_total when the metrics on this page were rendered: "
            "equal to it once they cover every event applied.",
            registry=live,
        )
        covered.set_function(lambda: self.covered)

    def age_s(self) -> float:
        """Seconds since the last rendering (0 before the first: nothing to be stale)."""
        if self.rendered_at is None:
            return 0.0
        return round(self._clock() - self.rendered_at, 3)

    def render(self) -> None:
        """Collect the slow collectors into text (on the event loop: between stream steps)."""
        began = self._clock()
        covered = self._covers()  # nothing is applied while this runs: one event loop
        rebuilds = self._rebuilds()
        try:
            body = exposition(self.registry.collect())
        except Exception as exc:
            self.error = f"a metrics rendering failed: {type(exc).__name__}"
            raise
        self.body, self.error, self.covered = body, "", covered
        self.rendered_rebuilds = rebuilds
        self.rendered_at = self._clock()
        self.took_s = round(self.rendered_at - began, 4)

    async def wait_turn(self) -> None:
        """The pause before the next rendering (see the module's note on pacing)."""
        if self.rendered_at is None:
            return
        pause = min(max(self.interval_s, PACE * self.took_s), self.stale_after_s / 3)
        await asyncio.sleep(pause)

    def loop(self) -> LoopBody:
        async def run(heartbeat: Heartbeat) -> None:
            while True:
                await self.wait_turn()
                self.render()
                heartbeat.beat()

        return run

    def checks(self) -> list[Check]:
        """Readiness: rendered since the last state rebuild, and the last rendering did not fail."""
        if self.error:
            return [Check("metrics-rendered", False, self.error, liveness=False)]
        if self.rendered_at is None:
            reason = "cohort metrics not rendered yet"
            return [Check("metrics-rendered", False, reason, liveness=False)]
        if self.rendered_rebuilds < self._rebuilds():
            reason = "cohort metrics not rendered since the partitions' state was rebuilt"
            return [Check("metrics-rendered", False, reason, liveness=False)]
        return [Check("metrics-rendered", True)]


# Names prometheus_client writes unchanged (legacy names need no escaping).
_PLAIN_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_PLAIN_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def exposition(metrics: Iterable[Metric]) -> bytes:
    """`generate_latest`'s text format, byte for byte, written faster for gauges.

    At 50,000 procedures the rendering writes ~15,000 gauge samples, and
    prometheus_client's writer validated and escaped every label name of
    every sample again: ~40% of a rendering (cProfile). Here a family's label
    order is sorted once, names are checked once per family, and values are
    escaped as prometheus_client escapes them. Any family that is not a plain
    gauge goes through `generate_latest` itself.
    """
    out: list[str] = []
    for metric in metrics:
        lines = _gauge_lines(metric)
        out.extend(lines if lines is not None else [generate_latest(_One(metric)).decode()])
    return "".join(out).encode("utf-8")


def _gauge_lines(metric: Metric) -> list[str] | None:
    name = metric.name
    if metric.type != "gauge" or not _PLAIN_NAME.fullmatch(name):
        return None
    doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
    lines = [f"# HELP {name} {doc}\n# TYPE {name} gauge\n"]
    orders: dict[tuple[str, ...], list[str]] = {}
    for sample in metric.samples:
        if sample.name != name or sample.timestamp is not None or sample.exemplar is not None:
            return None
        labels = sample.labels
        if not labels:
            lines.append(f"{name} {_go_float(sample.value)}\n")
            continue
        keys = tuple(labels)
        order = orders.get(keys)
        if order is None:
            if not all(_PLAIN_LABEL.fullmatch(key) for key in keys):
                return None
            order = orders[keys] = sorted(keys)
        text = ",".join(f'{key}="{_escape(labels[key])}"' for key in order)
        lines.append(f"{name}{{{text}}} {_go_float(sample.value)}\n")
    return lines


def _go_float(value: float) -> str:
    text: str = _untyped_go_float(value)  # type: ignore[no-untyped-call]
    return text


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _One:
    """One metric family as a collector, for `generate_latest`."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> list[Metric]:
        return [self.metric]
