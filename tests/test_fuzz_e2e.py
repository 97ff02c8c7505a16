"""End-to-end fuzzing: 10,000 mutated messages through a running worker.

Every message either counts or is dead-lettered: accepted plus
dead-lettered events equal what the messages stand for (see
tests/fuzzing.py for how each message's count is known), exactly, and the
worker answers /readyz with 200 throughout. `benchmarks/fuzz.py` runs the
same generator at 100,000 messages.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.conftest import SettingsFactory
from tests.fuzzing import fuzzed_messages
from tests.probes import health
from tests.support import produce, running_worker, scrape_async, sum_by, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

MESSAGES = 10_000


async def test_ten_thousand_mutated_messages_each_count_or_are_dead_lettered(
    make_settings: SettingsFactory, kafka_bootstrap: str
) -> None:
    messages = list(fuzzed_messages(seed=20261207, count=MESSAGES))
    units = sum(m.units for m in messages)
    kinds = Counter(m.kind for m in messages)
    assert len(kinds) >= 10, kinds  # every mutation is exercised
    assert kinds["huge"] >= 10, kinds
    settings = make_settings()
    readiness: list[int] = []
    async with running_worker(settings, kafka_bootstrap) as worker:
        base = worker.metrics.url
        # Ready before the fuzz starts: a worker is red for its first moments
        # until it has read every chart reset (the control check).
        await wait_until(lambda: health(base), lambda h: h[0] == 200, 30, "the worker ready")

        async def watch() -> None:
            while True:
                readiness.append((await health(base))[0])
                await asyncio.sleep(0.5)

        watching = asyncio.create_task(watch())
        try:
            await produce(
                kafka_bootstrap,
                settings.events_topic,
                (m.value for m in messages),
                max_request_size=4 << 20,
            )
            samples = await wait_until(
                lambda: scrape_async(f"{base}/metrics"),
                lambda s: sum_by(s, "spinewatch_messages_received_total") >= MESSAGES,
                300,
                "every message triaged and counted",
            )
        finally:
            watching.cancel()
        final = await health(base)

    accepted = sum_by(samples, "spinewatch_events_accepted_total")
    dead = sum_by(samples, "spinewatch_events_deadlettered_total")
    assert sum_by(samples, "spinewatch_messages_received_total") == MESSAGES
    assert accepted + dead == units, (accepted, dead, units)
    assert accepted > 0
    assert dead > MESSAGES / 2
    assert readiness, "/readyz was never asked"
    assert all(status == 200 for status in readiness), Counter(readiness)
    assert final[0] == 200, final[1]["failing"]
