"""The recovery hand-over fix (`spinewatch.patches.faust_recovery`).

Its call order is checked against a fake consumer. Then, on the embedded
broker, a worker restarted onto a backlog recovers its table from the changelog,
then faust seeks the streams to their committed offsets and resumes flow
control, which clears the streams' inbound queues. Whatever a stream
partition fetched before that clear is lost, so the test demands that no
stream partition can fetch when it happens, and that the restarted worker
then counts the whole cohort exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP

from spinewatch.demo.synthetic.cohort import default_sites, generate_cohort
from spinewatch.patches import faust_recovery
from spinewatch.patches.faust_recovery import _getmany_of_a_snapshot, _resuming_streams_last
from tests.conftest import SettingsFactory
from tests.expectation import expected_counts, observed_counts
from tests.support import produce, running_worker, scrape_async, sum_by, wait_until

EVENTS = TP("events", 0)
CHANGELOG = TP("segments-changelog", 0)


class FakeConsumer:
    """Records the order of faust's calls; only the partition bookkeeping."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, set[TP]]] = []

    def resume_partitions(self, partitions: Iterable[TP]) -> None:
        self.calls.append(("resume", set(partitions)))

    def _is_changelog_tp(self, tp: TP) -> bool:
        return tp.topic.endswith("-changelog")


def _recovery(consumer: FakeConsumer) -> Any:
    return type("Recovery", (), {"app": type("App", (), {"consumer": consumer})})()


async def test_stream_partitions_resume_after_the_step_and_changelogs_at_once() -> None:
    consumer = FakeConsumer()

    async def step(self: Any, generation_id: int = 0) -> None:
        self.app.consumer.resume_partitions({EVENTS, CHANGELOG})
        consumer.calls.append(("seek and clear", set()))

    await _resuming_streams_last(step)(_recovery(consumer), 1)

    assert consumer.calls == [
        ("resume", {CHANGELOG}),
        ("seek and clear", set()),
        ("resume", {EVENTS}),
    ]
    assert "resume_partitions" not in vars(consumer)  # the shadow is gone


async def test_a_step_cut_short_by_a_rebalance_leaves_the_streams_paused() -> None:
    consumer = FakeConsumer()

    async def step(self: Any, generation_id: int = 0) -> None:
        self.app.consumer.resume_partitions({EVENTS})
        raise RuntimeError("rebalance again")

    with pytest.raises(RuntimeError):
        await _resuming_streams_last(step)(_recovery(consumer), 1)

    assert consumer.calls == []
    assert "resume_partitions" not in vars(consumer)


async def test_a_fetch_sees_the_partitions_active_when_it_began(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    active = {CHANGELOG}
    seen: list[set[TP]] = []

    async def fetch(self: Any, partitions: set[TP], wait_s: float) -> dict[TP, list[Any]]:
        active.clear()  # recovery ends and pauses the changelogs meanwhile
        seen.append(set(partitions))
        return {}

    monkeypatch.setattr(faust_recovery, "faust_getmany", fetch)
    await _getmany_of_a_snapshot(None, active, 1.0)
    # aiokafka would have read the emptied set as "every partition".
    assert seen == [{CHANGELOG}]
    # And a fetch that begins with nothing active fetches nothing.
    assert await _getmany_of_a_snapshot(None, active, 1.0) == {}
    assert seen == [{CHANGELOG}]


@pytest.mark.e2e
async def test_a_restarted_worker_resumes_its_streams_only_after_the_seek_and_clear(
    make_settings: SettingsFactory, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cohort = generate_cohort(31, default_sites(400))
    half = len(cohort.deliveries) // 2
    settings = make_settings()

    async with running_worker(settings, kafka_bootstrap) as first:
        sent = await produce(kafka_bootstrap, settings.events_topic, cohort.deliveries[:half])

        async def received() -> float:
            samples = await scrape_async(f"{first.metrics.url}/metrics")
            return sum_by(samples, "spinewatch_messages_received_total")

        await wait_until(received, lambda n: n >= sent, 60, "the first half received")

    # The backlog the restarted worker starts on.
    await produce(kafka_bootstrap, settings.events_topic, cohort.deliveries[half:])

    # faust calls resume_flow right after flow_control.resume(), the clear.
    fetchable_at_clear: list[tuple[set[TP], set[TP]]] = []
    faust_resume_flow = Consumer.resume_flow

    def spy(self: Any) -> None:
        streams = {tp for tp in self.assignment() if not self._is_changelog_tp(tp)}
        fetchable_at_clear.append((streams, streams - self._paused_partitions))
        faust_resume_flow(self)

    monkeypatch.setattr(Consumer, "resume_flow", spy)

    expected = expected_counts(cohort.events)
    async with running_worker(settings, kafka_bootstrap) as restarted:

        async def observed() -> Any:
            samples = await scrape_async(f"{restarted.metrics.url}/metrics")
            return observed_counts(samples, expected)

        await wait_until(observed, lambda o: o == expected, 60, "the whole cohort counted")

    handovers = [fetchable for streams, fetchable in fetchable_at_clear if streams]
    assert handovers, "the restarted worker never resumed its assigned streams"
    assert all(not fetchable for fetchable in handovers), handovers
