"""Wiring: settings -> broker -> topics -> engine -> faust app -> /metrics.

The one place that knows how the parts fit together; the CLI, the demo and
the tests all start workers through it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import faust
from prometheus_client import CollectorRegistry, disable_created_metrics

from spinewatch.adapters.http import MetricsServer
from spinewatch.adapters.kafka_admin import ensure_topics
from spinewatch.adapters.kafka_lag import LagProbe
from spinewatch.adapters.kafka_security import KafkaSecurity
from spinewatch.adapters.message_signing import Keyring
from spinewatch.adapters.stream_health import StreamHealth, probing
from spinewatch.baselines import load_catalog
from spinewatch.devservers.tansu import EmbeddedBroker
from spinewatch.domain.drift.budget import target_arl0_cases
from spinewatch.domain.drift.design import design_charts, monitorable_metrics
from spinewatch.domain.drift.site_charts import AnyChart
from spinewatch.domain.drift.site_design import (
    SiteBudget,
    default_volume,
    default_volume_of,
)
from spinewatch.domain.drift.vas_drift import design_vas_charts
from spinewatch.domain.followup.book import CompletenessDesign
from spinewatch.domain.followup.schedule import schedule_windows
from spinewatch.engine.app import Streams, active_partitions, create_app
from spinewatch.engine.control_reader import ControlReader, control_consumer
from spinewatch.engine.drift_monitor import DriftMonitor
from spinewatch.engine.followup_monitor import FollowupMonitor
from spinewatch.engine.ingest_pool import IngestPool
from spinewatch.engine.metric_renderer import MetricRenderer
from spinewatch.engine.outcomes import OutcomeEngine
from spinewatch.engine.settings import Settings
from spinewatch.engine.silence_monitor import SilenceCollector, SilenceMonitor
from spinewatch.engine.site_designs import SiteDesigner, cache_in
from spinewatch.engine.startup import log_ready
from spinewatch.engine.stream_steps import publish_outbox
from spinewatch.errors import BrokerNotConfigured, BrokerUnavailable, SigningKeyMissing
from spinewatch.runtime.health import Check
from spinewatch.runtime.lifetime import tune_gc
from spinewatch.runtime.supervisor import Heartbeat, LoopBody, Supervisor

log = logging.getLogger(__name__)


NO_BROKER = (
    "no Kafka broker configured: set SPINEWATCH_KAFKA_BROKERS=host:port[,host:port], "
    "or ask for a throwaway in-memory Tansu broker (its data is lost when the worker "
    "stops) with --embedded-broker or SPINEWATCH_EMBEDDED_BROKER=true"
)


def require_broker(settings: Settings) -> None:
    """Refuse to go on without brokers unless the embedded broker was asked for.

    A worker that silently fell back to an in-memory broker would look
    healthy while every event sent to the real cluster went unread.
    """
    if settings.kafka_brokers is None and not settings.embedded_broker:
        raise BrokerNotConfigured(NO_BROKER)


NO_SIGNING_KEY = (
    "no signing key for the internal topics: set SPINEWATCH_SIGNING_KEY to at least 32 "
    'random bytes of text (e.g. the output of `python -c "import secrets; '
    'print(secrets.token_urlsafe(32))"`), the same in every worker and in the alerting '
    "service's SPINEWATCH_ALERTING_SIGNING_KEY"
)


def require_signing_key(settings: Settings) -> None:
    """Refuse configured brokers without a signing key.

    Without it anyone able to write the facts or drift topic could change
    the metrics or page on-call staff. The throwaway embedded broker gets a
    key of the process alone (`signing_keyring`).
    """
    if settings.signing_key is None and not settings.embedded_broker:
        raise SigningKeyMissing(NO_SIGNING_KEY)


def signing_keyring(settings: Settings) -> Keyring:
    """The keys fact batches and drift messages are signed and verified with."""
    require_signing_key(settings)
    if settings.signing_key is not None:
        return Keyring.from_secrets(settings.signing_key, settings.signing_previous_keys)
    # No other process reads the embedded broker's internal topics (the
    # demo, which runs its alerting service too, sets a key and hands it on).
    log.info("embedded broker: internal topics signed with a key of this process")
    return Keyring.generated()


def kafka_security(settings: Settings) -> KafkaSecurity:
    """The Kafka clients' security settings; a weak but valid choice is warned about once."""
    security = settings.kafka_security
    for risk in security.risks():
        log.warning("%s", risk)
    return security


def tansu_compat(settings: Settings) -> bool:
    """Whether the Tansu work-arounds apply: as set, else exactly with the embedded broker.

    The one place this is decided; `create_app` is handed the answer.
    """
    if settings.tansu_compat is not None:
        return settings.tansu_compat
    return settings.embedded_broker


@asynccontextmanager
async def kafka_brokers(settings: Settings) -> AsyncIterator[str]:
    """The configured brokers, or the embedded Tansu broker when asked for."""
    require_broker(settings)
    if settings.kafka_brokers is not None:
        yield settings.kafka_brokers
        return
    async with EmbeddedBroker() as broker:
        log.info("embedded Tansu broker on %s", broker.bootstrap)
        yield broker.bootstrap


@dataclass
class RunningWorker:
    settings: Settings
    engine: OutcomeEngine
    app: faust.App
    metrics: MetricsServer
    supervisor: Supervisor
    # Set when the supervisor gave up: the process should exit non-zero.
    gave_up: asyncio.Event
    # Renders the cohort, drift and follow-up metrics /metrics serves.
    renderer: MetricRenderer

    def active_partitions(self) -> set[int]:
        return active_partitions(self.app, self.settings)

    def health(self) -> dict[str, Any]:
        return {
            "active_partitions": sorted(self.active_partitions()),
            "rebuilds": self.engine.metrics.rebuilds._value.get(),
            "events_applied": self.engine.metrics.applied._value.get(),
        }


@asynccontextmanager
async def running_worker(
    settings: Settings, brokers: str, startup_timeout_s: float = 60.0
) -> AsyncIterator[RunningWorker]:
    """Start one worker on the current event loop; stop it on exit."""
    began = time.monotonic()
    keyring, security = await _prepare(settings, brokers)
    registry = CollectorRegistry()
    gave_up = asyncio.Event()
    supervisor = Supervisor(
        "worker",
        registry,
        give_up_after_s=settings.give_up_after_s,
        on_give_up=lambda _reason: gave_up.set(),
    )
    topics_at = time.monotonic()
    engine = outcome_engine(registry, settings)
    designed_at = time.monotonic()
    limits = settings.ingest_limits
    pool = IngestPool(settings.ingest_processes, settings.ingest_chunk_bytes, limits)
    stream = StreamHealth(
        registry,
        settings.app_id,
        stall_after_s=settings.stall_after_s,
        broker_timeout_s=settings.broker_timeout_s,
        detect_loss=True,
    )
    streams = create_app(
        settings,
        engine,
        pool,
        brokers,
        tansu_compat=tansu_compat(settings),
        keyring=keyring,
        supervisor=supervisor,
        health=stream,
    )
    app = streams.app
    renderer = MetricRenderer(
        registry,
        settings.metrics_render_interval_s,
        covers=engine.metrics.applied._value.get,
        rebuilds=engine.metrics.rebuilds._value.get,
    )
    _register_outcome_metrics(renderer.registry, engine, app, settings)
    metrics = MetricsServer(
        registry, settings.metrics_host, settings.metrics_port, rendered=renderer
    )
    worker = RunningWorker(settings, engine, app, metrics, supervisor, gave_up, renderer)
    metrics.checks, metrics.extra = supervisor.checks, worker.health
    probe = LagProbe(
        brokers, settings.app_id, (settings.events_topic, settings.facts_topic), security=security
    )
    supervisor.spawn(
        "lag-probe", probing(probe, stream, settings.probe_interval_s), stale_after_s=None
    )
    # Chart resets: every one known before the charts announce anything.
    control = ControlReader(
        engine.drift,
        keyring,
        settings.topics.control,
        consumer=control_consumer(brokers, security),
        deadletter=streams.deadletter,
        registry=registry,
        timeout_s=settings.broker_timeout_s,
        max_value_bytes=settings.deadletter_max_bytes,
    )
    _supervise(supervisor, worker, streams, control)
    for checks in (stream.checks, control.checks, lambda: faust_checks(app)):
        supervisor.add_checks(checks)
    started = asyncio.Event()

    async def on_startup_finished() -> None:
        started.set()

    app.on_startup_finished = on_startup_finished
    await metrics.start()
    try:
        # The ingest processes import their modules while faust starts and
        # joins the group (~2 s of a start-up on 2 busy cores, measured).
        await asyncio.gather(pool.start(), app.start())
        try:
            await asyncio.wait_for(started.wait(), startup_timeout_s)
        except TimeoutError:
            raise BrokerUnavailable(f"worker did not start within {startup_timeout_s} s") from None
        designer = engine.drift.designer
        log_ready(began, topics_at, designed_at, designer.calibrations if designer else 0)
        await probe.start()
        await supervisor.start()
        _warm_up(engine)
        yield worker
    finally:
        # Our loops first: a drift send must not race the producer's stop.
        await supervisor.stop()
        await probe.stop()
        # faust's stop can hang once an agent crashed or the broker went
        # away; a worker asked to stop must stop regardless.
        try:
            await asyncio.wait_for(app.stop(), settings.stop_timeout_s)
        except TimeoutError:
            log.error("worker did not stop within %s s; abandoning it", settings.stop_timeout_s)
        await _stop_helpers(pool, metrics, engine)


def _warm_up(engine: OutcomeEngine) -> None:
    """Once ready: SciPy and the provisional charts' run lengths, on the design thread."""
    if engine.drift.designer is not None:
        engine.drift.designer.warm_up(engine.drift.charts)


async def _prepare(settings: Settings, brokers: str) -> tuple[Keyring, KafkaSecurity]:
    """Keys, security, topics and process settings: what comes before the engine."""
    keyring, security = signing_keyring(settings), kafka_security(settings)
    await ensure_topics(
        brokers,
        settings.topics.names(),
        settings.partitions,
        security=security,
        configs=settings.topics.configs(),
        replication_factor=settings.replication_factor,
    )  # refuses topics with another partition count (TopicMismatch)
    tune_gc(settings.gc_young_threshold)
    # `_created` series would double every counter for no use on a dashboard.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    return keyring, security


def _supervise(
    supervisor: Supervisor, worker: RunningWorker, streams: Streams, control: ControlReader
) -> None:
    """The worker's own loops, and the checks of its metrics and state."""
    engine, settings, renderer = worker.engine, worker.settings, worker.renderer
    supervisor.spawn(
        "drift",
        _publishing_drift(engine, streams, settings),
        stale_after_s=max(30.0, 10 * settings.drift_interval_s),
    )
    supervisor.spawn("control", control.run, stale_after_s=30.0)
    supervisor.spawn("metrics-render", renderer.loop(), stale_after_s=renderer.stale_after_s)
    supervisor.add_checks(worker.metrics.metrics_check)
    supervisor.add_checks(renderer.checks)
    supervisor.add_checks(engine.changelog_check)


async def _stop_helpers(pool: IngestPool, metrics: MetricsServer, engine: OutcomeEngine) -> None:
    """The ingest processes, /metrics, and the drift design thread."""
    await pool.stop()
    await metrics.stop()
    if engine.drift.designer is not None:
        # Off the loop: a calibration under way cannot be interrupted.
        await asyncio.to_thread(engine.drift.designer.close)


def _publishing_drift(engine: OutcomeEngine, streams: Streams, settings: Settings) -> LoopBody:
    """Refold the charts that changed and publish what they imply, every interval."""

    async def run(heartbeat: Heartbeat) -> None:
        active = streams.app
        while True:
            engine.refresh_drift(active_partitions(active, settings))
            await publish_outbox(engine.drift, streams.drift, lookback_topic=streams.lookback)
            heartbeat.beat()
            await asyncio.sleep(settings.drift_interval_s)

    return run


def faust_checks(app: faust.App) -> list[Check]:
    """faust's own services: a crashed app or table recovery is a dead worker."""
    found = []
    recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
    for name, service in (("faust", app), ("recovery", recovery)):
        reason = service.crash_reason
        found.append(Check(name, not service.crashed, f"crashed: {type(reason).__name__}"))
    return found


def drift_monitor(settings: Settings, *, background: bool = True) -> DriftMonitor:
    """The monitored charts and each site's designer, for the configured budget.

    Runs before anything starts, so an impossible design (a metric with
    nothing to chart, an unreachable ARL0) stops the worker at start-up
    with the reason, not mid-stream. The charts designed here are the
    provisional ones (per stratum, at the default volume): a site's own
    designs follow from its cases (`domain/drift/site_design.py`). They
    come from the design cache under `data_dir` when it has them (a
    restart: no calibration, no SciPy import), else they are calibrated
    here and cached for the next start.
    `background=False` calibrates site designs in the caller's thread (test references).
    """
    catalog = load_catalog()
    months = settings.drift_arl0_months
    budgets = {
        site: SiteBudget(
            override.arl0_months if override.arl0_months is not None else months,
            override.volume_per_month,
        )
        for site, override in settings.drift_site_budgets.items()
    }
    designer = SiteDesigner(months, budgets, cache_in(settings.data_dir), background=background)
    charts: list[AnyChart] = []
    metrics = monitorable_metrics()
    for metric in settings.drift_metrics:
        target = target_arl0_cases(months, default_volume_of(metrics[metric].unit))
        charts.extend(
            design_charts(
                catalog, [metric], settings.drift_odds_ratios, target, designer.provisional_rate
            )
        )
    if settings.drift_vas_timepoints:
        target = target_arl0_cases(months, default_volume_of("patient"))
        charts.extend(
            design_vas_charts(
                catalog,
                settings.drift_vas_timepoints,
                settings.drift_vas_shift_sd,
                target,
                designer.provisional_vas,
            )
        )
    for chart in charts:
        # Cached under the key of a site's provisional plan on the default
        # budget (`provisional_rate`/`provisional_vas` used the same key).
        log.info(
            "drift chart %s (provisional, %g/month): h=%.3f, ARL0 %.0f, ARL1 %.0f cases, %d strata",
            chart.name,
            default_volume(chart),
            chart.design.limit,
            chart.design.arl0,
            chart.design.arl1,
            len(chart.strata),
        )
    log.info(
        "drift charts: %d provisional designs, %d calibrated now (the rest from %s)",
        len(charts), designer.calibrations, designer.cache.path,
    )  # fmt: skip
    return DriftMonitor(tuple(charts), settings.drift_resolve_after_cases, designer)


def outcome_engine(
    registry: CollectorRegistry, settings: Settings, *, background: bool = True
) -> OutcomeEngine:
    """The engine with its drift charts and follow-up completeness
    (`background=False`: site designs calibrated in the caller's thread)."""
    drift = drift_monitor(settings, background=background)
    return OutcomeEngine(
        registry,
        drift=drift,
        followup=followup_monitor(settings, drift),
        silence=SilenceMonitor(settings.silence_rule),
    )


def followup_monitor(settings: Settings, drift: DriftMonitor) -> FollowupMonitor | None:
    """Follow-up completeness of the configured schedule; None when none is scheduled."""
    if not settings.followup_schedule:
        return None
    design = CompletenessDesign(
        schedule_windows(settings.followup_schedule),
        settings.followup_expected_completeness,
        settings.followup_missing_odds_ratio,
        settings.drift_arl0_months,
    )
    return FollowupMonitor(design, drift, settings.drift_resolve_after_cases)


def _register_outcome_metrics(
    registry: CollectorRegistry, engine: OutcomeEngine, app: faust.App, settings: Settings
) -> None:
    # Imported late: the collector pulls in the baseline catalog.
    from spinewatch.engine.metrics import (  # noqa: PLC0415
        DriftCollector,
        FollowupCollector,
        OutcomeCollector,
    )

    registry.register(OutcomeCollector(engine, lambda: active_partitions(app, settings)))
    registry.register(FollowupCollector(engine, lambda: active_partitions(app, settings)))
    registry.register(DriftCollector(engine, lambda: active_partitions(app, settings)))
    registry.register(SilenceCollector(engine.silence, lambda: active_partitions(app, settings)))
