"""The producer-flush fix (`spinewatch.patches.faust_flush`): faust's buffer
with a slow client at its edge, no broker (the e2e kill tests cover that)."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.producer import ProducerBuffer
from prometheus_client import CollectorRegistry

from spinewatch.adapters.message_signing import Keyring
from spinewatch.adapters.stream_health import StreamHealth
from spinewatch.engine.app import create_app
from spinewatch.engine.ingest_pool import IngestPool
from spinewatch.engine.outcomes import OutcomeEngine
from spinewatch.engine.settings import Settings
from spinewatch.patches import faust_flush
from spinewatch.runtime.supervisor import Supervisor
from tests.support import scaled, wait_until

# Longer than the 0.1 s after which faust's own flush gave up.
SLOW_SEND_S = 0.25


class SlowClient:
    """Stands in for the Kafka client: each hand-over takes SLOW_SEND_S."""

    def __init__(self) -> None:
        self.delay_s = SLOW_SEND_S
        self.started = 0
        self.handed_over = 0

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        self.started += 1
        await asyncio.sleep(self.delay_s)
        self.handed_over += 1

    def message(self) -> Any:
        return SimpleNamespace(message=SimpleNamespace(channel=self))


async def _running_buffer() -> ProducerBuffer:
    faust_flush.apply_flush_fix()
    buffer = ProducerBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
    await buffer.start()
    return buffer


async def test_flush_returns_only_when_every_buffered_message_is_handed_over() -> None:
    client = SlowClient()
    buffer = await _running_buffer()
    try:
        for _ in range(3):
            buffer.put(client.message())
        await buffer.flush()
        assert client.handed_over == 3
        assert buffer.size == 0
        assert faust_flush.unsent(buffer) == 0
    finally:
        await buffer.stop()


async def test_flush_waits_for_the_message_its_sender_already_took() -> None:
    client = SlowClient()
    buffer = await _running_buffer()
    try:
        buffer.put(client.message())

        async def taken() -> tuple[int, int]:
            return buffer.size, client.started

        # The queue is empty while the one message is still on its way.
        await wait_until(taken, lambda state: state == (0, 1), 5, "the message taken")
        assert client.handed_over == 0
        await buffer.flush()
        assert client.handed_over == 1
    finally:
        await buffer.stop()


async def test_flushing_a_stopped_buffer_with_messages_is_an_error() -> None:
    client = SlowClient()
    buffer = await _running_buffer()
    await buffer.stop()
    buffer.put(client.message())
    with pytest.raises(RuntimeError, match="not Running"):
        await buffer.flush()


async def test_flush_under_a_steady_stream_waits_only_for_what_was_buffered_before_it() -> None:
    client = SlowClient()
    buffer = await _running_buffer()

    async def keep_buffering() -> None:
        # Faster than the client takes them: the buffer is never empty again.
        while True:
            buffer.put(client.message())
            await asyncio.sleep(SLOW_SEND_S / 5)

    for _ in range(2):
        buffer.put(client.message())
    stream = asyncio.create_task(keep_buffering())
    try:
        await asyncio.wait_for(buffer.flush(), timeout=scaled(10 * SLOW_SEND_S))
        assert client.handed_over >= 2
        assert buffer.size > 0
    finally:
        stream.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stream
        client.delay_s = 0  # let the rest out quickly: stop() refuses a full buffer
        await buffer.flush()
        await buffer.stop()


def test_every_app_gets_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    # Undo what earlier tests applied, so only create_app can apply it here.
    monkeypatch.setattr(ProducerBuffer, "put", faust_flush.faust_put)
    monkeypatch.setattr(ProducerBuffer, "_send_pending", faust_flush.faust_send_pending)
    monkeypatch.setattr(ProducerBuffer, "flush", faust_flush.faust_flush)
    settings = Settings(data_dir=tmp_path)
    registry = CollectorRegistry()
    create_app(
        settings,
        OutcomeEngine(registry),
        IngestPool(0, 1 << 20),
        "127.0.0.1:1",
        tansu_compat=False,
        keyring=Keyring.generated(),
        supervisor=Supervisor("worker", registry, give_up_after_s=60, on_give_up=print),
        health=StreamHealth(registry, "t", stall_after_s=5, broker_timeout_s=5, detect_loss=True),
    )
    assert ProducerBuffer.put is faust_flush._put_counted
    assert ProducerBuffer._send_pending is faust_flush._send_pending_counted
    assert ProducerBuffer.flush is faust_flush._flush_what_was_buffered
