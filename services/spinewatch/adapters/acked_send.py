"""Writes that are done only once the broker acknowledged them.

faust's `topic.send` returns when a record is queued, not when the broker
has it; a dead letter counted at that point could be lost with nothing to
show for it (a dead letter over the request limit once was: the metric
said +1, the topic got nothing). `send_all` waits for every
acknowledgement and sends again, with the failure policy's capped backoff,
whatever the broker did not take: a record is never dropped, the caller
simply does not move on (and its offsets are not committed) until the
broker has it. A record the producer or broker refuses as too large is
passed through `shrink` before the next attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError

from spinewatch.runtime.failures import Action, FailurePolicy, Stage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outgoing:
    key: str | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None


Shrink = Callable[[Outgoing], Outgoing]


async def send_all(
    topic: Any,
    records: Sequence[Outgoing],
    *,
    policy: FailurePolicy,
    what: str,
    shrink: Shrink | None = None,
    on_ack: Callable[[], None] | None = None,
) -> None:
    """Send `records` on a faust topic; return once the broker acknowledged each.

    `on_ack` is called after each acknowledgement: the caller is making
    progress, however long the whole batch takes.
    """
    pending = list(records)
    attempt = 0
    while pending:
        failed: list[tuple[Outgoing, BaseException]] = []
        acks: list[tuple[Outgoing, Any]] = []
        try:
            for record in pending:
                try:
                    acks.append((record, await _send(topic, record)))
                except Exception as exc:
                    failed.append((record, exc))
            for record, ack in acks:
                try:
                    await ack
                except Exception as exc:
                    failed.append((record, exc))
                else:
                    if on_ack is not None:
                        on_ack()
        except asyncio.CancelledError:
            # Stopping mid-send: the caller keeps the records; what the broker
            # answers later is read here, not logged as "never retrieved".
            for _, ack in acks:
                asyncio.ensure_future(ack).add_done_callback(_retrieve)
            raise
        if not failed:
            return
        attempt += 1
        first = failed[0][1]
        if policy.decide(Stage.WRITE, first) is Action.RAISE:  # pragma: no cover - not an Exception
            raise first
        pending = [
            shrink(record) if shrink is not None and _too_large(exc) else record
            for record, exc in failed
        ]
        delay = policy.backoff_s(attempt)
        log.warning(
            "%d %s not acknowledged (%s); attempt %d, next in %.1f s",
            len(failed), what, _kind(first), attempt + 1, delay,
        )  # fmt: skip
        await asyncio.sleep(delay)


def _retrieve(ack: asyncio.Future[Any]) -> None:
    if not ack.cancelled():
        ack.exception()


async def _send(topic: Any, record: Outgoing) -> Any:
    return await topic.send(key=record.key, value=record.value, headers=record.headers)


def _too_large(exc: BaseException) -> bool:
    # faust wraps the producer's own refusal in ProducerSendError; the
    # broker's refusal arrives on the acknowledgement unwrapped.
    return isinstance(exc, MessageSizeTooLargeError) or isinstance(
        exc.__cause__, MessageSizeTooLargeError
    )


def _kind(exc: BaseException) -> str:
    cause = exc.__cause__
    return type(exc).__name__ + (f" <- {type(cause).__name__}" if cause is not None else "")
