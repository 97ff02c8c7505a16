"""Investigation steps and look-back lists, in Redis beside the alert state.

A step (acknowledge, investigate, close, and a chart reset) is decided by
one Lua script that compares and sets the alert's investigation: its id
(a firing may have opened a new one since the caller read it) and its
status (the one the move starts from, `domain/alerts/investigation.py`).
Two people moving the same alert at once: one succeeds, the other is told
the status it found. The same script appends the step's record (who,
when, why, finding, note) to `{p}:history:<fingerprint>` and enqueues its
deliveries in the outbox (`redis_alerts.py`), so a step is recorded and
sent together or not at all; its transition id is `{investigation}:{step}`,
so the audit topic's readers dedupe a re-sent delivery.

Look-back lists (`contracts/lookback.py`) are kept per alert, keyed by
signal: `{p}:lookback:<fingerprint>` (a hash, signal id -> the message as
received) and `{p}:lookback-order:<fingerprint>` (arrival order), the
newest `keep` signals only, both expiring `ttl_s` after the last one
arrived. They hold pseudonymous procedure ids: served behind the API's
identity check, never logged.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Literal

from redis.asyncio import Redis

from spinewatch.domain.alerts.investigation import Investigation, Status

MoveOutcome = Literal["transition", "missing", "refused", "moved", "reset_done"]

# KEYS: alert, outbox, history. ARGV: 1 investigation id expected, 2 status
# it must have, 3 status after, 4 the investigation to assume when the
# alert has none (stored before investigations), 5 fields to set on the
# investigation (JSON), 6 fields to set on the alert (JSON), 7 'reset' when
# the investigation must not have reset its chart yet, 8 now ms, 9 delivery
# key prefix, 10 number of history records n, then n records (JSON), then
# (delivery id, delivery JSON) pairs.
_MOVE = """
local current = redis.call('GET', KEYS[1])
if not current then return {'missing', ''} end
local state = cjson.decode(current)
local inv = state.investigation
if type(inv) ~= 'table' then inv = cjson.decode(ARGV[4]) end
if inv.id ~= ARGV[1] then return {'moved', inv.status} end
if inv.status ~= ARGV[2] then return {'refused', inv.status} end
if ARGV[7] == 'reset' and type(inv.reset_id) == 'string' then
  return {'reset_done', inv.status}
end
for k, v in pairs(cjson.decode(ARGV[5])) do inv[k] = v end
inv.status = ARGV[3]
state.investigation = inv
for k, v in pairs(cjson.decode(ARGV[6])) do state[k] = v end
redis.call('SET', KEYS[1], cjson.encode(state))
local n = tonumber(ARGV[10])
for i = 11, 10 + n do redis.call('RPUSH', KEYS[3], ARGV[i]) end
-- Due 1 ms apart, in the order given: a closing is told before its reset.
local due = tonumber(ARGV[8])
for i = 11 + n, #ARGV, 2 do
  redis.call('SET', ARGV[9] .. ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], due, ARGV[i])
  due = due + 1
end
return {'transition', inv.status}
"""

# KEYS: lookback hash, its order. ARGV: signal id, message, now ms, keep, ttl s.
_LOOKBACK = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if excess > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, excess - 1)) do
    redis.call('HDEL', KEYS[1], old)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return excess > 0 and excess or 0
"""


class RedisInvestigations:
    """The investigation steps and look-back lists of one alerting deployment (`prefix`)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._move = redis.register_script(_MOVE)
        self._lookback = redis.register_script(_LOOKBACK)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def move(
        self,
        fingerprint: str,
        investigation: Investigation,
        before: Status,
        after: Status,
        *,
        set_investigation: dict[str, Any],
        set_alert: dict[str, Any],
        once_per_reset: bool,
        now_ms: int,
        records: list[dict[str, Any]],
        deliveries: list[tuple[str, dict[str, Any]]],
    ) -> tuple[MoveOutcome, Status | None]:
        """Apply one step if the alert's investigation is still `investigation` in `before`.

        Returns the outcome and the status found (after the step, on success).
        """
        args: list[Any] = [
            investigation.id,
            before,
            after,
            json.dumps(asdict(investigation)),
            json.dumps(set_investigation),
            json.dumps(set_alert),
            "reset" if once_per_reset else "",
            now_ms,
            self._key("delivery", ""),
            len(records),
            *(json.dumps(record) for record in records),
        ]
        for delivery_id, spec in deliveries:
            args += [delivery_id, json.dumps(spec)]
        keys = [
            self._key("alert", fingerprint),
            self._key("outbox"),
            self._key("history", fingerprint),
        ]
        outcome, status = (_text(v) for v in await self._move(keys=keys, args=args))
        return outcome, (status or None)  # type: ignore[return-value]

    async def history(self, fingerprint: str) -> list[dict[str, Any]]:
        """Every step of every investigation of the alert, oldest first."""
        raw = await self.redis.lrange(self._key("history", fingerprint), 0, -1)
        return [json.loads(item) for item in raw]

    async def keep_lookback(
        self,
        fingerprint: str,
        signal_id: str,
        message: bytes,
        *,
        now_ms: int,
        keep: int,
        ttl_s: int,
    ) -> int:
        """Hold one signal's look-back list; how many older signals' lists were let go."""
        keys = [self._key("lookback", fingerprint), self._key("lookback-order", fingerprint)]
        return int(await self._lookback(keys=keys, args=[signal_id, message, now_ms, keep, ttl_s]))

    async def lookback(self, fingerprint: str, signal_id: str) -> bytes | None:
        found = await self.redis.hget(self._key("lookback", fingerprint), signal_id)
        return found.encode() if isinstance(found, str) else found

    async def lookback_signals(self, fingerprint: str) -> list[str]:
        """The signals whose lists are held, newest first."""
        found = await self.redis.zrevrange(self._key("lookback-order", fingerprint), 0, -1)
        return [_text(signal) for signal in found]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
