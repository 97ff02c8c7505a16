"""A fix for faust-streaming's producer flush, applied on every broker.

faust commits consumer offsets only after `Producer.flush()`, so that what
a processed event sent (a table's changelog record, above all) is on the
broker before the event counts as done. But faust's `ProducerBuffer.flush`
(0.15.3, the newest release) gives up as soon as no buffered message went
out within 0.1 s, and returns with messages still in the buffer; it also
ignores the message its sender task has taken but not yet handed to the
Kafka client. The offsets are then committed anyway. A worker killed in
that window loses changelog records of events whose offsets are
committed, so its successor rebuilds from a changelog that is short.

On a loaded machine the 0.1 s is easy to miss: the buffer's sender waits
on the client, which keeps one batch per partition in flight, while the
event loop is busy applying fact batches. That is how the SIGKILL-restart
exactness test failed now and then under CPU load, a few procedures short.

The patched flush counts messages in and out of the buffer and waits until
every message buffered before the call has been handed to the client (whose
own flush, next, waits for the broker). Messages buffered after the call
belong to later offsets, so the flush does not wait for them: under a
steady stream the buffer need never be empty. Every `_POLL_S` it checks
that the buffer still runs (faust's own rule: flushing a stopped buffer is
an error, not a hang).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from faust.transport.producer import ProducerBuffer

# How often a waiting flush re-checks that the buffer's sender still runs.
_POLL_S = 0.1

_BUFFERED = "_spinewatch_buffered"
_HANDED_OVER = "_spinewatch_handed_over"

# faust's own methods, wrapped or replaced below.
faust_put = ProducerBuffer.put
faust_send_pending = ProducerBuffer._send_pending
faust_flush = ProducerBuffer.flush


def _count(buffer: ProducerBuffer, name: str) -> int:
    count: int = getattr(buffer, name, 0)
    return count


def _put_counted(self: Any, fut: Any) -> None:
    faust_put(self, fut)
    setattr(self, _BUFFERED, _count(self, _BUFFERED) + 1)


async def _send_pending_counted(self: Any, fut: Any) -> None:
    await faust_send_pending(self, fut)
    setattr(self, _HANDED_OVER, _count(self, _HANDED_OVER) + 1)


async def _flush_what_was_buffered(self: Any) -> None:
    if self.app.conf.producer_threaded:
        # A threaded producer's thread sends, not `_send_pending` (unused here).
        await faust_flush(self)
        return
    buffered = _count(self, _BUFFERED)
    while _count(self, _HANDED_OVER) < buffered:
        if self.state != "running":
            raise RuntimeError("Cannot flush: Producer not Running")
        self.message_sent.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.message_sent.wait(), timeout=_POLL_S)


def unsent(buffer: ProducerBuffer) -> int:
    """Messages buffered and not yet handed to the client (queued or in flight)."""
    return _count(buffer, _BUFFERED) - _count(buffer, _HANDED_OVER)


def apply_flush_fix() -> None:
    """Idempotent; must run before a producer starts (its sender binds the method)."""
    ProducerBuffer.put = _put_counted  # type: ignore[method-assign]
    ProducerBuffer._send_pending = _send_pending_counted  # type: ignore[method-assign]
    ProducerBuffer.flush = _flush_what_was_buffered  # type: ignore[method-assign]
