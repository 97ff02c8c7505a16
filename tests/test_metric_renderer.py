"""/metrics serves the cohort metrics as rendered off the scrape, and says how old they are.

Issue 20: a scrape at 50,000 procedures took 309 ms (3.5 s measured here
before this change, benchmarks/scrape.py), because the scrape itself
settled what changed and rendered every cohort and follow-up. Scrape time
is not asserted here (speed belongs to benchmarks); what makes it
independent of the procedures held is: a scrape calls no settle, no
totals and no chart refresh, whatever arrived. The worker tests then show
that a cohort metric still appears soon after its event, exactly as a
direct rendering gives it, and that a render loop that stops making
progress turns /readyz and /healthz red.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from spinewatch.adapters.http import MetricsServer
from spinewatch.contracts import Indication, ProcedureType
from spinewatch.demo.synthetic.cohort import SiteProfile, encode, generate_cohort
from spinewatch.engine import outcomes
from spinewatch.engine.bootstrap import running_worker
from spinewatch.engine.ingest import MessageOrigin, ingest_batch
from spinewatch.engine.metric_renderer import MetricRenderer, exposition
from spinewatch.engine.metrics import DriftCollector, OutcomeCollector
from spinewatch.engine.outcomes import OutcomeEngine
from tests.conftest import SettingsFactory
from tests.probes import failing, health
from tests.support import (
    Sample,
    outcome_samples,
    produce,
    rendered_all_applied,
    scrape_async,
    sum_by,
    value,
    wait_until,
)

SITE = "render-site"
DENOMINATOR = "spinewatch_outcome_denominator"


def _cohort(samples: dict[Sample, float]) -> dict[Sample, float]:
    return {k: v for k, v in samples.items() if k[0].startswith("spinewatch_outcome_")}


def _events(procedures: int) -> list[bytes]:
    site = SiteProfile(SITE, procedures, {(ProcedureType.PVP, Indication.OSTEOPOROTIC): 1})
    cohort = generate_cohort(43, [site], duplicate_share=0, malformed=0, retractions=0)
    return [encode(e) for e in cohort.events]


def _fact_batches(events: list[bytes]) -> list[bytes]:
    origin = MessageOrigin("events", 0, 0)
    return [raw for _, raw in ingest_batch([(e, origin) for e in events]).fact_batches]


def _parsed(text: str) -> dict[Sample, float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _collectors(engine: OutcomeEngine) -> list[Any]:
    return [OutcomeCollector(engine, lambda: {0}), DriftCollector(engine, lambda: {0})]


class _Calls:
    """Counts the engine's per-procedure work: settling, totals, chart refreshes."""

    def __init__(self, engine: OutcomeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        settle = outcomes.settle  # type: ignore[attr-defined]
        monkeypatch.setattr(outcomes, "settle", self._counted(settle))
        monkeypatch.setattr(engine, "totals", self._counted(engine.totals))
        monkeypatch.setattr(engine, "refresh_drift", self._counted(engine.refresh_drift))

    def _counted(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return function(*args, **kwargs)

        return counted


async def test_a_scrape_does_no_settle_work_and_serves_the_last_rendering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    live = CollectorRegistry()  # the engine's counters are live, as in a worker
    engine = OutcomeEngine(live)
    events = _events(40)
    # Two halves, one or more fact batches each (one site: one batch per call).
    batches = _fact_batches(events[: len(events) // 2])
    half = len(batches)
    batches += _fact_batches(events[len(events) // 2 :])
    table: dict[str, bytes] = {}
    for offset, raw in enumerate(batches[:half]):
        engine.apply(table, 0, offset, raw)
    renderer = MetricRenderer(live, interval_s=0.5, covers=engine.metrics.applied._value.get)
    for collector in _collectors(engine):
        renderer.registry.register(collector)
    calls = _Calls(engine, monkeypatch)
    server = MetricsServer(live, "127.0.0.1", 0, rendered=renderer)
    await server.start()
    try:
        renderer.render()
        assert calls.count > 0  # the rendering did settle
        before = await scrape_async(f"{server.url}/metrics")
        for offset, raw in enumerate(batches[half:], start=half):
            engine.apply(table, 0, offset, raw)
        calls.count = 0
        scraped = [await scrape_async(f"{server.url}/metrics") for _ in range(3)]
        assert calls.count == 0  # three scrapes, no per-procedure work
        renderer.render()
        after = await scrape_async(f"{server.url}/metrics")
    finally:
        await server.stop()

    def denominator(samples: dict[Sample, float]) -> float:
        return sum_by(samples, "spinewatch_outcome_denominator", site=SITE)

    assert denominator(before) > 0
    for page in scraped:  # the rendering as it was, with its age
        assert outcome_samples(page) == outcome_samples(before)
        assert ("spinewatch_metrics_render_age_seconds", frozenset()) in page
    assert denominator(after) > denominator(before)
    # Whether a page covers every event applied is on the page itself.
    assert rendered_all_applied(before)
    assert not any(rendered_all_applied(page) for page in scraped)
    assert rendered_all_applied(after)
    # Exact: the served page is what the collectors give for the same state.
    direct = CollectorRegistry()
    for collector in _collectors(engine):
        direct.register(collector)
    truth = outcome_samples(_parsed(generate_latest(direct).decode()))
    assert outcome_samples(after) == truth


class _Awkward:
    """Families and values the fast writer must write exactly as prometheus_client does."""

    def collect(self) -> Any:
        gauge = GaugeMetricFamily(
            "spinewatch_test_awkward", 'Help with a \\ backslash,\na newline and "quotes".',
            labels=("site", "a_label"),
        )  # fmt: skip
        values = (float("nan"), float("inf"), float("-inf"), 1e7, 123456789.0, 0.1, -0.0, 3)
        texts = ('quote "x"', "back\\slash", "new\nline", "ünïcödé", "", "a,b=c", "{}", "ok")
        for text, number in zip(texts, values, strict=True):
            gauge.add_metric([text, text[::-1]], number)
        plain = GaugeMetricFamily("spinewatch_test_plain", "No labels.")
        plain.add_metric([], 2.5)
        counter = CounterMetricFamily("spinewatch_test_things", "A counter.", labels=("kind",))
        counter.add_metric(["x"], 4)
        return [gauge, plain, counter]


def test_the_fast_writer_writes_what_prometheus_client_writes() -> None:
    engine = OutcomeEngine(CollectorRegistry())
    for offset, raw in enumerate(_fact_batches(_events(60))):
        engine.apply({}, 0, offset, raw)
    registry = CollectorRegistry()
    for collector in [*_collectors(engine), _Awkward()]:
        registry.register(collector)
    ours = exposition(registry.collect())
    assert ours == generate_latest(registry)
    assert len(_parsed(ours.decode())) > 100  # a real page, cohorts included


def test_the_renderer_is_not_ready_before_its_first_rendering_nor_after_a_failed_one() -> None:
    renderer = MetricRenderer(CollectorRegistry(), interval_s=0.5)
    assert [c.ok for c in renderer.checks()] == [False]

    class Broken:
        def collect(self) -> Any:
            raise RuntimeError("a collector bug")

    renderer.render()
    assert [c.ok for c in renderer.checks()] == [True]
    renderer.registry.register(Broken())
    with pytest.raises(RuntimeError):
        renderer.render()
    (check,) = renderer.checks()
    assert not check.ok
    assert check.reason == "a metrics rendering failed: RuntimeError"  # no message echoed


def test_the_renderer_is_not_ready_until_it_renders_after_a_state_rebuild() -> None:
    # A restarted or rebalanced worker rebuilds its partitions after its first
    # rendering may have run: that page lacks the recovered cohorts and charts.
    rebuilds = [0]
    renderer = MetricRenderer(CollectorRegistry(), interval_s=0.5, rebuilds=lambda: rebuilds[0])
    renderer.render()
    assert [c.ok for c in renderer.checks()] == [True]
    rebuilds[0] += 1
    (check,) = renderer.checks()
    assert not check.ok
    assert "rebuilt" in check.reason
    renderer.render()
    assert [c.ok for c in renderer.checks()] == [True]


@pytest.mark.e2e
async def test_a_cohort_metric_appears_after_its_event_and_a_stalled_render_turns_health_red(
    make_settings: SettingsFactory,
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    stalled, release = asyncio.Event(), asyncio.Event()
    wait_turn = MetricRenderer.wait_turn

    async def maybe_stalled(self: MetricRenderer) -> None:
        if stalled.is_set():
            await release.wait()  # the loop hangs between renderings
        await wait_turn(self)

    monkeypatch.setattr(MetricRenderer, "wait_turn", maybe_stalled)
    # Rendered every 0.1 s at least: stale (red) after 5 s without a rendering.
    settings = make_settings(metrics_render_interval_s=0.1, data_dir=tmp_path)
    events = _events(10)
    async with running_worker(settings, kafka_bootstrap) as worker:
        base = worker.metrics.url
        metrics = f"{base}/metrics"
        await wait_until(lambda: health(base), lambda a: a[0] == 200, 60, "a ready worker")
        await produce(kafka_bootstrap, settings.events_topic, events)
        applied = await wait_until(
            lambda: scrape_async(metrics),
            lambda s: sum_by(s, "spinewatch_events_applied_total") >= len(events),
            60,
            "every event applied",
        )
        direct = CollectorRegistry()
        direct.register(OutcomeCollector(worker.engine, worker.active_partitions))

        async def shown_and_truth() -> tuple[dict[Sample, float], dict[Sample, float]]:
            shown = await scrape_async(metrics)
            truth = _parsed(generate_latest(direct).decode())
            return _cohort(shown), _cohort(truth)

        shown, truth = await wait_until(
            shown_and_truth,
            lambda pair: pair[0] == pair[1] and sum_by(pair[0], DENOMINATOR, site=SITE) > 0,
            30,
            "the cohort's metrics on /metrics, as the collectors give them",
        )

        stalled.set()
        red = await wait_until(lambda: health(base), lambda a: a[0] == 503, 30, "red /readyz")
        live = await health(base, "healthz")
        stale = await scrape_async(metrics)
        release.set()
        green = await wait_until(lambda: health(base), lambda a: a[0] == 200, 30, "green again")

    assert sum_by(applied, "spinewatch_events_applied_total") == len(events)
    assert shown == truth
    reasons = failing(red)
    assert any(r.startswith("loop:metrics-render: no progress for") for r in reasons), reasons
    assert live[0] == 503, "a render loop without progress is a liveness failure"
    assert value(stale, "spinewatch_metrics_render_age_seconds") >= 5.0
    assert green[1]["status"] == "ok"
