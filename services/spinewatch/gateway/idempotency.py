"""Idempotency by event_id in Redis: each event is written once, however often it is sent.

Hospital systems retry: a timeout on their side does not mean the gateway
did not write. Every event_id is claimed in Redis before it is produced:

    SET {prefix}:event:{event_id} "pending:<digest>" NX PX <pending>
    ... produce, wait for the broker's acknowledgement (acks=all) ...
    SET {prefix}:event:{event_id} "<digest>" PX <retention>

and released (deleted, only while it still holds our pending claim) when
the write failed, so the sender's retry can write it. The digest is
SHA-256 of the event's canonical JSON (the validated model dumped again),
so whitespace, key order and number spelling do not make a retry look new.
A later request with the same id finds:

* the same digest: `duplicate`, not produced again;
* another digest (pending or written): `conflict`, never a silent duplicate:
  the same id with other content is a sender's bug that someone must see;
* the same digest still pending: another request is writing it right
  now; the sender should retry shortly (`in_flight`).

The event_id is a random UUID chosen by the sender, not a patient or
procedure id, so the keys reveal nothing clinical. A request's claims are
one Lua script call (SET NX, else GET what is held, for every key) and its
confirmations another: one command each, not one per event, because
redis-py's per-command cost (encoding, a timeout and a parse per reply)
made a pipeline of 200 SETs cost ~20 us per event against ~9 us as one
script (benchmarks/gateway.py's batch case, 2 cores). The gateway does not
support Redis Cluster, where a multi-key script would need one hash slot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any
from uuid import UUID

from redis.asyncio import Redis

_PENDING = "pending:"
# Per key: 1 when claimed now, else what the key holds (0 when it vanished
# between the SET and the GET: released or expired). ARGV: one value per
# key, then the claim's lifetime in ms.
_CLAIM = """
local claimed = {}
local ttl = ARGV[#ARGV]
for i, key in ipairs(KEYS) do
    if redis.call('SET', key, ARGV[i], 'NX', 'PX', ttl) then
        claimed[i] = 1
    else
        claimed[i] = redis.call('GET', key) or 0
    end
end
return claimed
"""
# The broker has them: each key holds its digest for the retention (ms, last ARGV).
_CONFIRM = """
local ttl = ARGV[#ARGV]
for i, key in ipairs(KEYS) do
    redis.call('SET', key, ARGV[i], 'PX', ttl)
end
return #KEYS
"""
# Delete the key only while it holds our own pending claim: a claim that
# expired and was taken by a retry must not be freed by the first writer.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class Claim(Enum):
    NEW = "new"  # ours to write
    DUPLICATE = "duplicate"  # written before with the same content
    CONFLICT = "conflict"  # this id was sent before with other content
    IN_FLIGHT = "in_flight"  # the same content is being written right now


@dataclass(frozen=True, slots=True)
class Key:
    event_id: UUID
    digest: str  # hex SHA-256 of the canonical JSON


def content_digest(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()


class IdempotencyStore:
    def __init__(self, redis: Redis, prefix: str, retention_s: int, pending_ms: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.retention_ms = retention_s * 1000
        self.pending_ms = pending_ms
        self._release: Any = redis.register_script(_RELEASE)
        self._claim: Any = redis.register_script(_CLAIM)
        self._confirm: Any = redis.register_script(_CONFIRM)

    def _key(self, event_id: UUID) -> str:
        return f"{self.prefix}:event:{event_id}"

    async def claim(self, keys: Sequence[Key]) -> list[Claim]:
        """Claim each key for writing, or say why it is not ours. Raises on a Redis error."""
        if not keys:
            return []
        found = await self._claim(
            keys=[self._key(k.event_id) for k in keys],
            args=[*(_PENDING + k.digest for k in keys), self.pending_ms],
        )
        return [
            Claim.NEW if held == 1 else _judge(key.digest, None if held == 0 else held)
            for key, held in zip(keys, found, strict=True)
        ]

    async def confirm(self, keys: Sequence[Key]) -> None:
        """The broker has these events: remember them for the retention window."""
        if not keys:
            return
        await self._confirm(
            keys=[self._key(k.event_id) for k in keys],
            args=[*(k.digest for k in keys), self.retention_ms],
        )

    async def release(self, keys: Sequence[Key]) -> None:
        """The write failed: free each claim still ours, so a retry can write it."""
        for key in keys:
            await self._release(keys=[self._key(key.event_id)], args=[_PENDING + key.digest])

    async def remember(self, facts: Mapping[str, str]) -> None:
        """Facts of the gateway's own (`{prefix}:{name}` -> value), kept for the retention."""
        if not facts:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, value in facts.items():
                pipe.set(f"{self.prefix}:{name}", value, px=self.retention_ms)
            await pipe.execute()

    async def recall(self, names: Sequence[str]) -> list[str | None]:
        if not names:
            return []
        found = await self.redis.mget([f"{self.prefix}:{name}" for name in names])
        return [None if value is None else _text(value) for value in found]


def _judge(digest: str, held: Any) -> Claim:
    if held is None:
        # Not expected (the claim script's SET and GET are atomic); were the
        # key gone, a write just failed or finished: the sender's retry decides.
        return Claim.IN_FLIGHT
    text = _text(held)
    if text == digest:
        return Claim.DUPLICATE
    if text == _PENDING + digest:
        return Claim.IN_FLIGHT
    return Claim.CONFLICT


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
