"""Stream health from lag and progress: stalls, lost data, an unreachable broker (pure logic)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from spinewatch.adapters.kafka_lag import LagReading, PartitionLag
from spinewatch.adapters.stream_health import MISSING_PROBES_FOR_LOSS, StreamHealth
from spinewatch.runtime.health import Check

EVENTS = "app-events"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _health(
    clock: Clock, owned: set[tuple[str, int]] | None = None
) -> tuple[StreamHealth, CollectorRegistry]:
    registry = CollectorRegistry()
    health = StreamHealth(
        registry,
        "app",
        owned=lambda: owned if owned is not None else {(EVENTS, 0), (EVENTS, 1)},
        stall_after_s=5,
        broker_timeout_s=10,
        detect_loss=True,
        clock=clock,
        wall_clock=lambda: clock.now + 1_700_000_000,
    )
    return health, registry


def _lag(
    partition: int, committed: int | None, end: int, produced_at: float | None = None
) -> PartitionLag:
    """`produced_at` on the test clock: when the record at the committed offset was written."""
    ts = None if produced_at is None else int((produced_at + 1_700_000_000) * 1000)
    return PartitionLag(EVENTS, partition, committed, 0, end, ts)


def _reading(*partitions: PartitionLag, missing: tuple[str, ...] = ()) -> LagReading:
    return LagReading(list(partitions), missing)


def _probe(health: StreamHealth, *partitions: PartitionLag) -> None:
    health.probed(_reading(*partitions), health.processed_offsets())


def _named(health: StreamHealth, name: str) -> Check:
    return next(c for c in health.checks() if c.name == name)


def test_input_waiting_with_no_progress_is_a_stall_after_the_threshold() -> None:
    clock = Clock()
    health, registry = _health(clock)
    _probe(health, _lag(0, 10, 50, produced_at=998), _lag(1, 7, 7))
    assert _named(health, "stream").ok
    clock.now += 4
    _probe(health, _lag(0, 10, 50, produced_at=998), _lag(1, 7, 7))
    assert _named(health, "stream").ok  # not yet: 4 s < 5 s
    clock.now += 2
    _probe(health, _lag(0, 10, 60, produced_at=998), _lag(1, 7, 7))
    stream = _named(health, "stream")
    assert not stream.ok
    assert stream.liveness
    assert stream.reason.startswith(f"{EVENTS}[0]: 50 waiting, none processed for 6 s")
    assert (
        registry.get_sample_value(
            "spinewatch_consumer_lag_messages", {"group": "app", "topic": EVENTS, "partition": "0"}
        )
        == 50
    )
    age = registry.get_sample_value(
        "spinewatch_oldest_unprocessed_event_age_seconds", {"group": "app", "topic": EVENTS}
    )
    assert age == 8
    # Progress on that partition clears it, even before the commit moves.
    health.processed(EVENTS, 0, 30)
    assert _named(health, "stream").ok


def test_progress_while_records_keep_arriving_is_no_stall() -> None:
    clock = Clock()
    health, _ = _health(clock)
    for step in range(10):
        _probe(health, _lag(0, step * 10, step * 10 + 40))
        health.processed(EVENTS, 0, step * 10 + 20)
        clock.now += 2
    assert _named(health, "stream").ok


def test_processed_but_not_yet_committed_is_not_waiting() -> None:
    clock = Clock()
    health, _ = _health(clock)
    health.processed(EVENTS, 0, 49)  # all 50 done; the commit comes later
    _probe(health, _lag(0, 10, 50))
    clock.now += 60
    _probe(health, _lag(0, 10, 50))
    assert _named(health, "stream").ok


def test_a_partition_owned_by_another_worker_is_not_judged_here() -> None:
    clock = Clock()
    health, _ = _health(clock, owned={(EVENTS, 1)})
    _probe(health, _lag(0, 0, 500))
    clock.now += 60
    _probe(health, _lag(0, 0, 500))
    assert _named(health, "stream").ok


def test_a_log_that_ends_below_what_was_processed_is_lost_data() -> None:
    clock = Clock()
    health, _ = _health(clock)
    health.processed(EVENTS, 1, 249)
    _probe(health, _lag(0, 10, 10), _lag(1, 250, 250))
    assert _named(health, "broker-data").ok
    # A memory broker restarted empty: the log starts again from nothing.
    _probe(health, _lag(0, None, 0), _lag(1, None, 3))
    lost = _named(health, "broker-data")
    assert not lost.ok
    assert lost.liveness
    assert "this process processed up to 249" in lost.reason
    # Committed offsets beyond the log are lost data too.
    other, _ = _health(clock)
    _probe(other, _lag(0, 90, 10))
    assert "committed offset 90 beyond the end 10" in _named(other, "broker-data").reason


def test_no_answer_from_the_broker_is_red_for_readiness_only() -> None:
    clock = Clock()
    health, _ = _health(clock)
    _probe(health, _lag(0, 0, 0))
    clock.now += 9
    health.probe_failed("lag probe: KafkaConnectionError")
    assert _named(health, "broker").ok
    clock.now += 2
    broker = _named(health, "broker")
    assert not broker.ok
    assert not broker.liveness
    assert broker.reason == "unreachable for 11 s (lag probe: KafkaConnectionError)"
    _probe(health, _lag(0, 0, 0))
    assert _named(health, "broker").ok


def test_a_topic_gone_from_the_broker_after_processing_is_lost_data() -> None:
    clock = Clock()
    health, _ = _health(clock)
    health.probed(_reading(_lag(0, None, 0), missing=("other-topic",)), health.processed_offsets())
    assert _named(health, "broker-data").ok  # nothing processed there: nothing lost
    health.processed(EVENTS, 0, 12)
    # Absent from one answer, then back (a leader briefly unavailable): not lost.
    health.probed(_reading(missing=(EVENTS,)), health.processed_offsets())
    health.probed(_reading(_lag(0, 12, 13)), health.processed_offsets())
    for _ in range(MISSING_PROBES_FOR_LOSS - 1):
        health.probed(_reading(missing=(EVENTS,)), health.processed_offsets())
        assert _named(health, "broker-data").ok
    health.probed(_reading(missing=(EVENTS,)), health.processed_offsets())
    lost = _named(health, "broker-data")
    assert not lost.ok
    assert (
        lost.reason
        == f"the broker lost records: {EVENTS}: the topic no longer exists on the broker"
    )


def test_records_processed_while_the_probe_was_out_are_not_lost_data() -> None:
    clock = Clock()
    health, _ = _health(clock)
    health.processed(EVENTS, 0, 99)
    before = health.processed_offsets()
    health.processed(EVENTS, 0, 180)  # produced and processed after the probe's fetch
    health.probed(_reading(_lag(0, 50, 100)), before)
    assert _named(health, "broker-data").ok
    health.probed(_reading(_lag(0, 50, 60)), health.processed_offsets())
    assert not _named(health, "broker-data").ok  # what was processed before it asked is gone


def test_a_busy_consumer_is_slow_not_stalled_but_an_unserved_partition_is() -> None:
    clock = Clock()
    health, _ = _health(clock)
    _probe(health, _lag(0, 0, 900), _lag(1, 0, 900))
    for _ in range(20):  # 40 s of acknowledgements, nothing finished
        clock.now += 2
        health.active()
        _probe(health, _lag(0, 0, 900), _lag(1, 0, 900))
    assert _named(health, "stream").ok
    for step in range(15):  # partition 0 moves on; partition 1 is never served
        clock.now += 2
        health.active()
        health.processed(EVENTS, 0, step)
        _probe(health, _lag(0, 0, 900), _lag(1, 0, 900))
    stream = _named(health, "stream")
    assert not stream.ok
    assert stream.reason.startswith(f"{EVENTS}[1]: 900 waiting, none processed for 70 s")
    assert f"{EVENTS}[0]" not in stream.reason
