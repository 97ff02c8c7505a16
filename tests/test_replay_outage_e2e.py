"""End-to-end: the broker goes away in the middle of a replay, and comes back.

A broker of this test's own, behind a TCP proxy it advertises (so every
connection passes through the proxy): `cut()` resets every connection and
refuses new ones with the broker's data intact, as a network partition or
a broker restart would. The replay must stop by itself once nothing was
acknowledged for `--give-up-after` (exit 3, nothing confirmed that the
broker does not hold), and the same command, once the broker is back,
must finish the file with every event on the topic and counted once.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from spinewatch.adapters.kafka_admin import ensure_topics
from spinewatch.contracts.topics import Topology
from spinewatch.demo.synthetic.cohort import default_sites, encode
from spinewatch.devservers.tansu import EmbeddedBroker, free_port
from tests.support import consume, scaled
from tests.tcp_proxy import TcpProxy
from tests.test_replay_e2e import (
    cohort_events,
    first_sends,
    interrupt_midway,
    replay_command,
    run_to_end,
)

pytestmark = pytest.mark.e2e


@contextmanager
def broker_behind(proxy: TcpProxy) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(port=proxy.target_port, advertised=proxy.address)
    broker.launch()
    try:
        yield broker
    finally:
        broker.terminate()


async def test_a_broker_gone_mid_replay_stops_it_and_the_same_command_finishes(
    tmp_path: Path,
) -> None:
    events = cohort_events(31, default_sites(600))
    lines = [encode(e) for e in events]
    path = tmp_path / "backfill.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    state = tmp_path / "backfill.jsonl.replay-state.json"
    topic = Topology(f"o{uuid.uuid4().hex[:12]}").events
    proxy = TcpProxy(free_port())
    with broker_behind(proxy) as broker:
        proxy.start()
        try:
            await broker.wait_until_ready(scaled(20))
            await ensure_topics(proxy.address, [topic], 4)
            command = replay_command(
                path, "--to", "kafka", "--brokers", proxy.address,
                "--app-id", topic.removesuffix("-events"), "--batch-size", "5",
                "--give-up-after", str(scaled(3)),
            )  # fmt: skip

            code, stopped = await interrupt_midway(
                command, dict(os.environ), state, len(lines), lambda _: proxy.cut()
            )
            assert code == 3  # gave up by itself: the broker did not answer
            assert 0 < stopped["confirmed"] < len(lines)
            assert not stopped["complete"]

            proxy.restore()
            code, summary = await run_to_end(command, dict(os.environ))
            assert code == 0, summary
            window = first_sends(lines, stopped["confirmed"], stopped["sent_until"])
            assert summary["total"] == {
                "accepted": len(events), "duplicate": 0, "conflict": 0, "rejected": 0,
                "forbidden": 0, "resent": window,
            }  # fmt: skip
            records = await consume(proxy.address, topic, len(events) + window, timeout_s=5)
        finally:
            proxy.stop()
    on_topic = [json.loads(record.value or b"{}")["event_id"] for record in records]
    assert set(on_topic) == {e["event_id"] for e in events}
    # Only what the stopped run sent without an answer can be there twice.
    assert len(on_topic) - len(events) <= window
