"""The faust application, built by a factory from `Settings`.

Two agents, each a few lines:

* `ingest` reads the inbound events topic in batches, triages every message
  (valid events become facts, defects go to the dead-letter topic with
  field-level reasons) and forwards one fact batch per site to the internal
  facts topic, keyed by site so that a site's state lives in one partition.
* `apply` reads fact batches, applies them to the records of their
  partition and appends what was new to the segments table, whose changelog
  is the durable state.

Offsets are committed only after the producer flushed what a batch sent
(faust flushes before it commits; `adapters.faust_flush` makes that flush
wait for every buffered changelog record), so at-least-once holds; the
state is a set of facts keyed by event id, so a redelivered batch changes
nothing. After a rebalance the streams resume only once faust has sought
them to their committed offsets (`adapters.faust_recovery`), so no record
is skipped on the way in.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import faust
from faust.exceptions import NotReady, ProducerSendError
from faust.types import EventT, StreamT

from spinewatch.adapters.compat import SINGLE_RECORD_BATCH_BYTES, apply_tansu_compat
from spinewatch.adapters.faust_flush import apply_flush_fix
from spinewatch.adapters.faust_recovery import apply_recovery_fix
from spinewatch.adapters.state_codec import UnreadableState
from spinewatch.drift_monitor import DriftMonitor
from spinewatch.engine import OutcomeEngine
from spinewatch.ingest import MessageOrigin
from spinewatch.ingest_pool import IngestPool
from spinewatch.settings import SEGMENTS_TABLE, Settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, engine: OutcomeEngine, pool: IngestPool, brokers: str
) -> faust.App:
    # Offsets must not be committed before what their events sent is out.
    apply_flush_fix()
    # Nor may a record be skipped when the streams resume after a rebalance.
    apply_recovery_fix()
    if settings.tansu_compat:
        apply_tansu_compat()
    app = faust.App(settings.app_id, **_faust_config(settings, brokers))

    events = app.topic(settings.events_topic, value_type=bytes, value_serializer="raw")
    facts = _keyed_topic(app, settings.facts_topic)
    deadletter = app.topic(settings.deadletter_topic, value_type=bytes, value_serializer="raw")
    drift = _keyed_topic(app, settings.drift_topic)
    segments = _segment_table(app, settings)

    @app.agent(events, name="ingest")
    async def ingest(stream: StreamT[bytes]) -> None:
        batch_size, within = settings.ingest_batch_max, settings.ingest_batch_within_s
        batches = cast("faust.Stream[bytes]", stream).take_events(batch_size, within=within)
        async for batch in batches:
            async for result in pool.triaged([(e.value, _origin(e)) for e in batch]):
                engine.count_ingested(result)
                for letter in result.dead_letters:
                    await deadletter.send(value=letter.value, headers=letter.headers)
                for site_id, fact_batch in result.fact_batches:
                    await facts.send(key=site_id, value=fact_batch)

    @app.agent(facts, name="apply")
    async def apply(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                engine.apply(segments, message.partition, message.offset, event.value)
            except UnreadableState as exc:  # only if another release wrote the topic
                log.error("unreadable fact batch at %s: %s", _origin(event), exc)

    # Charts are refolded on a timer rather than per event: one refold covers
    # everything that arrived since the last, and signals go out keyed by site.
    @app.timer(interval=settings.drift_interval_s, name="drift")  # type: ignore[untyped-decorator]
    async def publish_drift() -> None:
        if app.should_stop:
            return  # the producer may be gone; a rebuild re-announces what is pending
        engine.refresh_drift(active_partitions(app, settings))
        await publish_outbox(engine.drift, drift)

    # Recovery completes after every rebalance: records and totals are then
    # rebuilt from the segments of the partitions this worker now actively
    # owns, and nothing else.
    async def rebuild_state() -> None:
        engine.rebuild(segments.items(), active_partitions(app, settings))

    segments.on_recover(rebuild_state)

    return app


async def publish_outbox(monitor: DriftMonitor, topic: Any) -> int:
    """Send the monitor's queued messages keyed by site; return how many went out.

    A send refused because the producer is not (or no longer) running, as
    when a timer tick races the worker's stop, must not crash the app: the
    unsent messages go back to the outbox for the next tick, in order.
    """
    taken = monitor.take_outbox()
    for sent, (site_id, message) in enumerate(taken):
        try:
            await topic.send(key=site_id, value=message.model_dump_json().encode())
        except (NotReady, ProducerSendError) as exc:
            monitor.requeue(taken[sent:])
            log.warning("%d drift messages held for the next tick: %r", len(taken) - sent, exc)
            return sent
    return len(taken)


def _keyed_topic(app: faust.App, name: str) -> Any:
    """A topic of raw bytes keyed by site id (raw too: no JSON round trip)."""
    return app.topic(
        name, key_type=str, key_serializer="raw", value_type=bytes, value_serializer="raw"
    )


def _segment_table(app: faust.App, settings: Settings) -> Any:
    # Keys and values are raw bytes both in the table and in its changelog:
    # faust would otherwise pick JSON from key_type/value_type.
    schema: faust.Schema[Any, Any] = faust.Schema(
        key_type=str, key_serializer="raw", value_type=bytes, value_serializer="raw"
    )
    changelog = app.topic(
        settings.changelog_topic,
        schema=schema,
        partitions=settings.partitions,
        # Segment keys are unique, so compaction would keep everything anyway.
        compacting=False,
        deleting=False,
        acks=False,
        internal=True,
    )
    table: Any = app.Table(
        SEGMENTS_TABLE, schema=schema, partitions=settings.partitions, changelog_topic=changelog
    )
    table.key_serializer = "raw"
    table.value_serializer = "raw"
    return table


def active_partitions(app: faust.App, settings: Settings) -> set[int]:
    """Partitions of the facts topic (and so of the changelog) this worker owns."""
    return {
        tp.partition for tp in app.assignor.assigned_actives() if tp.topic == settings.facts_topic
    }


def _origin(event: EventT[Any]) -> MessageOrigin:
    message = event.message
    return MessageOrigin(message.topic, message.partition, message.offset)


def _faust_config(settings: Settings, brokers: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker": [f"kafka://{address}" for address in brokers.split(",")],
        "store": settings.store,
        "datadir": str(settings.data_dir),
        "autodiscover": False,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": 1,
        "processing_guarantee": "at_least_once",
        # Standbys would double memory, and the memory store loses keys when
        # a standby is promoted; recovery from the changelog is exact instead.
        "table_standby_replicas": 0,
        "broker_commit_every": settings.commit_every,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": min(3.0, settings.session_timeout_s / 3),
        # Bulk messages are large; a small fetch size stalls the consumer.
        "consumer_max_fetch_size": 8 << 20,
        # The web server would expose /table endpoints with patient state.
        "web_enabled": False,
        "web_bind": "127.0.0.1",
        "web_port": settings.web_port,
        "logging_config": None,
    }
    if settings.tansu_compat:
        config["producer_max_batch_size"] = SINGLE_RECORD_BATCH_BYTES
    return config
