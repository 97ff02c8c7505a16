"""The faust application, built by a factory from `Settings`.

Two agents, each a few lines; the steps they call are in `stream_steps`:

* `ingest` reads the inbound events topic in batches, triages every message
  (valid events become facts, defects go to the dead-letter topic with
  field-level reasons) and forwards one fact batch per site to the internal
  facts topic, keyed by site so that a site's state lives in one partition.
* `apply` reads fact batches, applies them to the records of their
  partition and appends what was new to the segments table, whose changelog
  is the durable state.

Both internal topics the worker writes are signed: every fact batch and
every drift message carries an HMAC of the deployment's key
(`adapters/message_signing.py`), and `apply` dead-letters a batch whose
signature does not verify, so that writing to the facts topic does not
bypass validation. Every Kafka client of the app (faust's consumer,
producer and topic admin) authenticates as the settings' `kafka_*`
security fields say (`adapters/kafka_security.py`).

Neither raises for a message: the failure policy (`spinewatch.runtime.failures`)
dead-letters it. Both run inside the supervisor's `running` block, which
counts a crash and faust's restart of the agent, and both report each
processed offset to the stream health, which turns red when input waits
and nothing moves.

Offsets are committed only after the producer flushed what a batch sent
(faust flushes before it commits; `patches.faust_flush` makes that flush
wait for every buffered changelog record), so at-least-once holds; the
state is a set of facts keyed by event id, so a redelivered batch changes
nothing. After a rebalance the streams resume only once faust has sought
them to their committed offsets (`patches.faust_recovery`), so no record
is skipped on the way in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.types import StreamT

from spinewatch import patches
from spinewatch.adapters.message_signing import Keyring, SignedTopic, TopicKind
from spinewatch.adapters.state_snapshot import SnapshotStore
from spinewatch.adapters.stream_health import StreamHealth
from spinewatch.contracts.topics import SEGMENTS_TABLE
from spinewatch.engine.ingest_pool import IngestPool
from spinewatch.engine.outcomes import OutcomeEngine
from spinewatch.engine.settings import Settings
from spinewatch.engine.stream_steps import ApplyStep, IngestStep
from spinewatch.patches.tansu import SINGLE_RECORD_BATCH_BYTES
from spinewatch.runtime.supervisor import Supervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Streams:
    """The app and the channels the worker's own loops publish to."""

    app: faust.App
    drift: Any
    segments: Any
    lookback: Any  # signed look-back lists
    deadletter: Any


def create_app(
    settings: Settings,
    engine: OutcomeEngine,
    pool: IngestPool,
    brokers: str,
    *,
    tansu_compat: bool,
    keyring: Keyring,
    supervisor: Supervisor,
    health: StreamHealth,
) -> Streams:
    # Offsets must not be committed before what their events sent is out,
    # nor may a record be skipped when the streams resume after a rebalance;
    # the Tansu work-arounds only when tansu_compat (bootstrap.tansu_compat).
    # Refuses (PatchVersionMismatch) on versions the patches were not tested with.
    patches.apply(tansu_compat=tansu_compat)
    app = faust.App(settings.app_id, **_faust_config(settings, brokers, tansu_compat))

    events = app.topic(settings.events_topic, value_type=bytes, value_serializer="raw")
    facts = _keyed_topic(app, settings.facts_topic)
    deadletter = app.topic(settings.deadletter_topic, value_type=bytes, value_serializer="raw")
    drift = SignedTopic(_keyed_topic(app, settings.drift_topic), keyring, TopicKind.DRIFT)
    lookback = SignedTopic(_keyed_topic(app, settings.topics.lookback), keyring, TopicKind.LOOKBACK)
    segments = _segment_table(app, settings)
    supervisor.watch("ingest")
    supervisor.watch("apply")
    signed_facts = SignedTopic(facts, keyring, TopicKind.FACTS)
    ingest_step = IngestStep(engine, pool, signed_facts, deadletter, health=health)
    apply_step = ApplyStep(
        engine,
        segments,
        deadletter,
        lambda: active_partitions(app, settings),
        keyring=keyring,
        health=health,
        max_value_bytes=settings.deadletter_max_bytes,
    )
    health.owned = lambda: owned_inputs(app, settings)

    @app.agent(events, name="ingest")
    async def ingest(stream: StreamT[bytes]) -> None:
        batch_size, within = settings.ingest_batch_max, settings.ingest_batch_within_s
        batches = cast("faust.Stream[bytes]", stream).take_events(batch_size, within=within)
        async with supervisor.running("ingest") as heartbeat:
            async for batch in batches:
                await ingest_step(batch)
                heartbeat.beat()

    @app.agent(facts, name="apply")
    async def apply(stream: StreamT[bytes]) -> None:
        async with supervisor.running("apply") as heartbeat:
            async for event in stream.events():
                await apply_step(event)
                heartbeat.beat()

    # Recovery completes after every rebalance: records and totals are then
    # rebuilt from the segments of the partitions this worker now actively
    # owns, and nothing else.
    async def rebuild_state() -> None:
        engine.recover(segments, active_partitions(app, settings))

    segments.on_recover(rebuild_state)
    if settings.store == "rocksdb://":
        # The table survives a restart on local disk; a snapshot of the state
        # built from it spares reading every segment again.
        engine.snapshots = SnapshotStore(settings.data_dir / "outcome-snapshots")

        async def save_snapshots(*_: Any, **__: Any) -> None:
            engine.save_snapshots()

        app.timer(settings.snapshot_every_s, name="outcome_snapshots")(save_snapshots)
        app.on_before_shutdown.connect(save_snapshots)  # a clean stop: nothing to apply

    return Streams(app, drift, segments, lookback, deadletter)


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
        # As the topic is created before the app starts (contracts/topics.py
        # says why compacted): faust only declares a changelog that does not
        # exist yet, and never checks the settings of one that does.
        compacting=True,
        deleting=False,
        config=settings.topics.configs()[settings.changelog_topic],
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


def owned_inputs(app: faust.App, settings: Settings) -> set[tuple[str, int]]:
    """(topic, partition) of both input topics that this worker actively consumes."""
    inputs = (settings.events_topic, settings.facts_topic)
    return {
        (tp.topic, tp.partition) for tp in app.assignor.assigned_actives() if tp.topic in inputs
    }


def _faust_config(settings: Settings, brokers: str, tansu_compat: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker": [f"kafka://{address}" for address in brokers.split(",")],
        "store": settings.store,
        "datadir": str(settings.data_dir),
        "autodiscover": False,
        "topic_partitions": settings.partitions,
        # The topics faust declares itself (its leader topic) get the same.
        "topic_replication_factor": settings.replication_factor,
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
        # TLS and SASL (None: PLAINTEXT); faust hands them to each aiokafka client.
        "broker_credentials": settings.faust_credentials(),
    }
    if tansu_compat:
        config["producer_max_batch_size"] = SINGLE_RECORD_BATCH_BYTES
    return config
