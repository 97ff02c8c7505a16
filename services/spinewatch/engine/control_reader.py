"""Chart resets for the drift monitor: `{app}-control`, read from the start and followed.

A reset is decided by a closed investigation in the alerting service and
published once, signed (`contracts/control.py`). Charts are folds over the
records, rebuilt at every start and rebalance, so a worker must know every
reset ever made: this loop reads the whole topic at every start, without a
consumer group (every partition assigned: the topic holds a few records a
year), and then follows it.

* Each record is verified (`TopicKind.CONTROL`, the worker's keyring)
  before it is decoded, then validated against `ChartReset`. A record that
  fails is counted (`spinewatch_control_messages_rejected_total{reason}`),
  logged in one line and never applied. It is dead-lettered, with the
  reason and field errors, by the workers running when it arrives (its
  offset is past the end this worker saw at its start); a worker reading it
  again at a later start counts it but does not letter it again.
* A valid reset goes to the drift monitor (`DriftMonitor.apply_reset`:
  idempotent, kept for sites this worker does not own);
  `spinewatch_chart_resets_applied_total{site, metric, direction}` counts
  the resets this process took.
* The gate: the drift monitor folds and announces nothing until the topic
  has been read up to the end offsets it had at start (`/readyz` check
  `control`, red meanwhile). Reading that cannot start or stops moving
  before the end for `timeout_s` fails the loop: `loop:control` turns red
  (liveness) within seconds, and the supervisor restarts it with backoff.

Tansu answers ListOffsets with the last record batch's base offset + 1
(`adapters/kafka_lag.py`); a fetch returns whole batches, so reaching that
offset means the last batch was read whole.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from spinewatch.adapters.kafka_clients import started
from spinewatch.adapters.kafka_security import KafkaSecurity
from spinewatch.adapters.message_signing import SIGNATURE_FAULTS, Keyring, TopicKind, fault_error
from spinewatch.contracts.control import ChartReset
from spinewatch.engine.drift_monitor import DriftMonitor
from spinewatch.engine.stream_steps import write_dead_letters
from spinewatch.errors import FieldError
from spinewatch.runtime.dead_letters import DEFAULT_MAX_VALUE_BYTES, MessageOrigin, dead_letter
from spinewatch.runtime.failures import FailurePolicy, RejectReason, export_at_zero
from spinewatch.runtime.health import Check
from spinewatch.runtime.supervisor import Heartbeat

log = logging.getLogger(__name__)

POLL_MS = 500


class ControlMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.applied = Counter(
            "spinewatch_chart_resets_applied",
            "Operator resets of a chart taken by this worker (each once, by id).",
            ["site", "metric", "direction"],
            registry=registry,
        )
        self.rejected = Counter(
            "spinewatch_control_messages_rejected",
            "Control-topic messages never applied: unsigned, badly signed, or invalid.",
            ["reason"],
            registry=registry,
        )
        export_at_zero(self.rejected, SIGNATURE_FAULTS)
        self.ignored = Counter(
            "spinewatch_control_messages_ignored",
            "Valid resets with nothing to do: already taken, or naming no chart of this worker.",
            ["reason"],
            registry=registry,
        )


class ControlReader:
    def __init__(
        self,
        monitor: DriftMonitor,
        keyring: Keyring,
        topic: str,
        *,
        consumer: Callable[[], AIOKafkaConsumer],
        deadletter: Any,
        registry: CollectorRegistry,
        timeout_s: float,
        policy: FailurePolicy | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.monitor = monitor
        self.keyring = keyring
        self.topic = topic
        self._consumer = consumer
        self.deadletter = deadletter
        self.metrics = ControlMetrics(registry)
        self.timeout_s = timeout_s
        self.policy = policy or FailurePolicy()
        self.max_value_bytes = max_value_bytes
        self._clock = clock
        # The end of each partition when this process first read the topic:
        # the gate opens once every partition is read that far.
        self.start_ends: dict[int, int] | None = None
        self._behind: dict[int, int] = {}
        self._rejected: set[tuple[int, int]] = set()  # counted once per process
        monitor.ready = False

    @property
    def caught_up(self) -> bool:
        return self.monitor.ready

    def checks(self) -> list[Check]:
        """Readiness: red until every reset made before this start is known."""
        if self.caught_up:
            return [Check("control", True, liveness=False)]
        if self.start_ends is None:
            reason = f"chart resets not read yet: {self.topic} not reached"
        else:
            reason = f"chart resets not read yet: {sum(self._behind.values())} records to go"
        return [Check("control", False, reason, liveness=False)]

    async def run(self, heartbeat: Heartbeat) -> None:
        """The supervised loop: read from the start, open the gate, follow."""
        async with started(self._consumer()) as consumer:
            tps = await asyncio.wait_for(self._partitions(consumer), self.timeout_s)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            if self.start_ends is None:
                ends = await asyncio.wait_for(consumer.end_offsets(tps), self.timeout_s)
                self.start_ends = {tp.partition: int(end) for tp, end in ends.items()}
            moved_at = self._clock()
            while True:
                if not self.caught_up and await self._reached_start_ends(consumer, tps):
                    self.monitor.ready = True
                    log.info(
                        "chart resets read to the end of %s: drift charts announce", self.topic
                    )
                batch = await consumer.getmany(timeout_ms=POLL_MS)
                heartbeat.beat()
                for records in batch.values():
                    for record in records:
                        await self._handle(record)
                if batch or self.caught_up:
                    moved_at = self._clock()
                elif self._clock() - moved_at > self.timeout_s:
                    raise TimeoutError(
                        f"{self.topic}: no record for {self.timeout_s:g} s with "
                        f"{sum(self._behind.values())} to read before the charts may announce"
                    )

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        while True:
            found = consumer.partitions_for_topic(self.topic)
            if found:
                return [TopicPartition(self.topic, p) for p in sorted(found)]
            await consumer.force_metadata_update()
            await asyncio.sleep(0.1)

    async def _reached_start_ends(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]
    ) -> bool:
        ends = self.start_ends or {}
        for tp in tps:
            position = await consumer.position(tp)
            self._behind[tp.partition] = max(0, ends.get(tp.partition, 0) - position)
        return not any(self._behind.values())

    async def _handle(self, record: ConsumerRecord[Any, Any]) -> None:
        raw: bytes = record.value if record.value is not None else b""
        origin = MessageOrigin(record.topic, record.partition, record.offset)
        fault = self.keyring.verify(TopicKind.CONTROL, record.key, raw, record.headers)
        if fault is not None:
            await self._reject(raw, origin, fault, [fault_error(fault)])
            return
        try:
            reset = ChartReset.model_validate_json(raw)
        except ValidationError as exc:
            reason, errors = _invalid(exc)
            await self._reject(raw, origin, reason, errors)
            return
        outcome = self.monitor.apply_reset(reset)
        if outcome == "applied":
            self.metrics.applied.labels(reset.site_id, reset.metric, reset.direction).inc()
            log.info(
                "chart reset taken: site %s, %s (%s), restarting after %s",
                reset.site_id, reset.metric, reset.direction, reset.effective_after.isoformat(),
            )  # fmt: skip
        else:
            self.metrics.ignored.labels(outcome).inc()

    async def _reject(
        self, raw: bytes, origin: MessageOrigin, reason: RejectReason, errors: list[FieldError]
    ) -> None:
        seen = (origin.partition, origin.offset)
        if seen in self._rejected:
            return  # read again after a restart of this loop: counted already
        self._rejected.add(seen)
        self.metrics.rejected.labels(reason.value).inc()
        arrived_now = origin.offset >= (self.start_ends or {}).get(origin.partition, 0)
        log.error(
            "control message at %s[%d] offset %d rejected, never applied (%s)%s",
            origin.topic, origin.partition, origin.offset, reason.value,
            "" if arrived_now else "; dead-lettered when it arrived",
        )  # fmt: skip
        if arrived_now:
            letter = dead_letter(
                raw, errors, reason.value, origin, max_value_bytes=self.max_value_bytes
            )
            await write_dead_letters(self.deadletter, [letter], self.policy)


def _invalid(exc: ValidationError) -> tuple[RejectReason, list[FieldError]]:
    """The reason and field errors of a reset that breaks its contract (never the value)."""
    details = exc.errors(include_input=False, include_url=False)
    errors = [
        FieldError(".".join(map(str, e["loc"])) or "<root>", e["type"], e["msg"]) for e in details
    ]
    kinds = {(e["type"], tuple(e["loc"])) for e in details}
    if any(kind == "json_invalid" for kind, _ in kinds):
        return RejectReason.INVALID_JSON, errors
    if ("literal_error", ("schema_version",)) in kinds:
        return RejectReason.UNSUPPORTED_SCHEMA_VERSION, errors
    return RejectReason.SCHEMA_VIOLATION, errors


def control_consumer(brokers: str, security: KafkaSecurity) -> Callable[[], AIOKafkaConsumer]:
    """A consumer of no group: every partition assigned, nothing committed."""

    def make() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=brokers,
            group_id=None,
            enable_auto_commit=False,
            **security.aiokafka_kwargs(),
        )

    return make
