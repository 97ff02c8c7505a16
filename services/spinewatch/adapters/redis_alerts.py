"""Alert state, dedupe keys, acknowledgements and the delivery outbox, in Redis.

Every step that decides whether someone is paged is one Lua script, so it
is atomic across alerting processes: the first process to record a drift
message decides the transition and enqueues its deliveries; any other
process (or a redelivery of the same message) finds the dedupe key and
does nothing. Deliveries live in a sorted set scored by when they are due;
a process claims due ones by pushing their score a lease ahead, so a
process that dies mid-delivery leaves them to be claimed again when the
lease runs out (at least once; Alertmanager dedupes identical alerts).

Keys (prefix `{p}`): `{p}:seen:<message id>` (dedupe, with a TTL),
`{p}:alert:<fingerprint>` (the alert, JSON, with its current
investigation), `{p}:history:<fingerprint>` (the investigations' steps,
oldest first: `adapters/redis_investigations.py`), `{p}:outbox` (due
deliveries), `{p}:delivery:<id>` (a delivery's spec), `{p}:resend` (when
each firing alert is next re-sent to Alertmanager). Every call has a
socket timeout.

A firing (a new episode, or a sentinel paging again) opens an
investigation, or joins the one still open (`domain/alerts/investigation.py`),
in the same script that decides the page, and appends its `fired` step to
the history.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Literal

from redis.asyncio import Redis

from spinewatch.domain.alerts.investigation import Investigation, entry, legacy, opened
from spinewatch.domain.alerts.model import Alert, Transition, rfc3339

# "informational": a message recorded on the topic that pages nobody (drift.redesigned).
Outcome = Literal["transition", "continued", "duplicate", "stale", "not_firing", "informational"]

# KEYS: seen, alert, outbox, resend, history. ARGV: seen TTL s (0: kept for
# good), kind (signal, in_control or sentinel), alert JSON,
# signal id, now ms, resend-at ms, fingerprint, delivery key prefix,
# ends_at, the investigation a firing opens (JSON), its `fired` step (JSON),
# then (delivery id, delivery JSON) pairs.
_RECORD = """
-- A firing joins the alert's open investigation, or opens a new one.
local function investigated(new, old)
  local joined = false
  local open = old and old.investigation
  if type(open) == 'table' and open.status ~= 'closed' then
    open.episodes = (tonumber(open.episodes) or 1) + 1
    new.investigation = open
    new.acknowledged_by = old.acknowledged_by
    joined = true
  else
    new.investigation = cjson.decode(ARGV[10])
  end
  local step = cjson.decode(ARGV[11])
  step.investigation_id = new.investigation.id
  step.joined = joined
  redis.call('RPUSH', KEYS[5], cjson.encode(step))
  return cjson.encode(new)
end
local fresh
if ARGV[1] == '0' then
  fresh = redis.call('SET', KEYS[1], '1', 'NX')
else
  fresh = redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1])
end
local current = redis.call('GET', KEYS[2])
local state = nil
if current then state = cjson.decode(current) end
if not fresh then
  -- A sentinel withdrawn because its procedure was voided or moved pages
  -- again when it is back (a retraction, for good, never comes back).
  if ARGV[2] ~= 'sentinel' or not state or state.status ~= 'resolved'
      or type(state.withdrawn_reason) ~= 'string' or state.withdrawn_reason == 'retracted' then
    return 'duplicate'
  end
end
if ARGV[2] == 'signal' then
  if state and state.status == 'firing' then
    -- The same episode: no new page. The latest signal's annotations, but
    -- the episode's earliest onset (change point) and a count of signals.
    local new = cjson.decode(ARGV[3])
    local old = state.annotations
    local count = (tonumber(old.signals_in_episode) or 1) + 1
    if type(state.onset) == 'string' and type(new.onset) == 'string'
        and state.onset <= new.onset then
      new.annotations.change_point = old.change_point
    else
      state.onset = new.onset
    end
    new.annotations.signals_in_episode = tostring(count)
    state.signal_id = ARGV[4]
    state.annotations = new.annotations
    redis.call('SET', KEYS[2], cjson.encode(state))
    return 'continued'
  end
  redis.call('SET', KEYS[2], investigated(cjson.decode(ARGV[3]), state))
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[7])
elseif ARGV[2] == 'sentinel' then
  redis.call('SET', KEYS[2], investigated(cjson.decode(ARGV[3]), state))
else
  if (not state) or state.status ~= 'firing' or state.signal_id ~= ARGV[4] then
    return 'stale'
  end
  state.status = 'resolved'
  state.ends_at = ARGV[9]
  redis.call('SET', KEYS[2], cjson.encode(state))
  redis.call('ZREM', KEYS[4], ARGV[7])
end
for i = 12, #ARGV, 2 do
  redis.call('SET', ARGV[8] .. ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[i])
end
return 'transition'
"""

# A sentinel's page withdrawn: resolved now, with the reason, atomically.
# KEYS: seen (the withdrawal's id, kept for good), alert, outbox, seen of the
# sentinel. ARGV: sentinel id, reason, annotations JSON, ends_at, now ms,
# delivery key prefix, then (delivery id, delivery JSON) pairs.
_WITHDRAW = """
if not redis.call('SET', KEYS[1], '1', 'NX') then return 'duplicate' end
local current = redis.call('GET', KEYS[2])
if not current then
  -- Never paged (or not yet recorded): a retracted sentinel never will be.
  if ARGV[2] == 'retracted' then redis.call('SET', KEYS[4], '1', 'NX') end
  return 'stale'
end
local state = cjson.decode(current)
if state.status ~= 'firing' or state.signal_id ~= ARGV[1] then return 'stale' end
state.status = 'resolved'
state.ends_at = ARGV[4]
state.withdrawn_reason = ARGV[2]
state.annotations = cjson.decode(ARGV[3])
redis.call('SET', KEYS[2], cjson.encode(state))
for i = 7, #ARGV, 2 do
  redis.call('SET', ARGV[6] .. ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[i])
end
return 'transition'
"""

# KEYS: a sorted set. ARGV: now, new score for what is claimed, limit.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], member) end
return due
"""


class RedisAlertStore:
    def __init__(self, redis: Redis, prefix: str, seen_ttl_s: int = 30 * 86_400) -> None:
        self.redis = redis
        self.prefix = prefix
        self.seen_ttl_s = seen_ttl_s
        self._record = redis.register_script(_RECORD)
        self._claim = redis.register_script(_CLAIM)
        self._withdraw = redis.register_script(_WITHDRAW)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def record(
        self,
        message_id: str,
        kind: Literal["signal", "in_control", "sentinel"],
        alert: Alert,
        *,
        now_ms: int,
        resend_at_ms: int,
        deliveries: list[tuple[str, dict[str, Any]]],
        firing_id: str | None = None,
    ) -> Outcome:
        """Apply one drift message; enqueue deliveries only on a real transition.

        `firing_id`: the firing's transition id (the message id by default),
        which names the investigation it opens and its `fired` step.
        """
        firing = firing_id or message_id
        at = rfc3339(datetime.fromtimestamp(now_ms / 1000, UTC))
        investigation = opened(alert.fingerprint, firing, at)
        fired = entry("fired", investigation.id, at=at, by=None, firing_id=firing)
        # Sentinel ids are kept for good: a worker rebuilt months later
        # re-announces every sentinel it finds, and none may page twice.
        args: list[Any] = [
            0 if kind == "sentinel" else self.seen_ttl_s,
            kind,
            json.dumps(asdict(alert)),
            alert.signal_id,
            now_ms,
            resend_at_ms,
            alert.fingerprint,
            self._key("delivery", ""),
            alert.ends_at or "",
            json.dumps(asdict(investigation)),
            json.dumps(fired),
        ]
        for delivery_id, spec in deliveries:
            args += [delivery_id, json.dumps(spec)]
        keys = [
            self._key("seen", message_id),
            self._key("alert", alert.fingerprint),
            self._key("outbox"),
            self._key("resend"),
            self._key("history", alert.fingerprint),
        ]
        result = await self._record(keys=keys, args=args)
        return _text(result)  # type: ignore[return-value]

    async def withdraw(
        self,
        message_id: str,
        withdrawn: Alert,
        *,
        now_ms: int,
        deliveries: list[tuple[str, dict[str, Any]]],
    ) -> Outcome:
        """Withdraw a firing sentinel alert (`withdrawn`: its state after); ids kept for good."""
        args: list[Any] = [
            withdrawn.signal_id,
            withdrawn.withdrawn_reason or "",
            json.dumps(withdrawn.annotations),
            withdrawn.ends_at or "",
            now_ms,
            self._key("delivery", ""),
        ]
        for delivery_id, spec in deliveries:
            args += [delivery_id, json.dumps(spec)]
        keys = [
            self._key("seen", message_id),
            self._key("alert", withdrawn.fingerprint),
            self._key("outbox"),
            self._key("seen", withdrawn.signal_id),
        ]
        return _text(await self._withdraw(keys=keys, args=args))  # type: ignore[return-value]

    async def enqueue(self, delivery_id: str, spec: dict[str, Any], due_ms: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key("delivery", delivery_id), json.dumps(spec))
            pipe.zadd(self._key("outbox"), {delivery_id: due_ms})
            await pipe.execute()

    async def claim_deliveries(
        self, now_ms: int, lease_ms: int, limit: int = 50
    ) -> list[tuple[str, dict[str, Any]]]:
        ids = await self._claim(keys=[self._key("outbox")], args=[now_ms, now_ms + lease_ms, limit])
        claimed = []
        for raw_id in ids:
            delivery_id = _text(raw_id)
            spec = await self.redis.get(self._key("delivery", delivery_id))
            if spec is None:  # completed by another process meanwhile
                await self.redis.zrem(self._key("outbox"), delivery_id)
                continue
            claimed.append((delivery_id, json.loads(spec)))
        return claimed

    async def complete(self, delivery_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._key("outbox"), delivery_id)
            pipe.delete(self._key("delivery", delivery_id))
            await pipe.execute()

    async def retry(self, delivery_id: str, spec: dict[str, Any], due_ms: int) -> None:
        await self.enqueue(delivery_id, spec, due_ms)

    async def claim_resends(self, now_ms: int, next_ms: int) -> list[str]:
        fingerprints = await self._claim(keys=[self._key("resend")], args=[now_ms, next_ms, 100])
        return [_text(fp) for fp in fingerprints]

    async def alert(self, fingerprint: str) -> Alert | None:
        raw = await self.redis.get(self._key("alert", fingerprint))
        return None if raw is None else _alert(json.loads(raw))

    async def alerts(self) -> list[Alert]:
        found = []
        async for key in self.redis.scan_iter(match=self._key("alert", "*"), count=500):
            raw = await self.redis.get(key)
            if raw is not None:
                found.append(_alert(json.loads(raw)))
        return sorted(found, key=lambda a: a.fingerprint)

    async def pending_deliveries(self) -> int:
        return int(await self.redis.zcard(self._key("outbox")))


def _alert(data: dict[str, Any]) -> Alert:
    # Lua's cjson writes an empty Lua table as {} and JSON null as null.
    return Alert(
        fingerprint=data["fingerprint"],
        status=data["status"],
        severity=data["severity"],
        labels=dict(data["labels"]),
        annotations=dict(data["annotations"]),
        signal_id=data["signal_id"],
        starts_at=data["starts_at"],
        ends_at=data.get("ends_at") or None,
        acknowledged_by=data.get("acknowledged_by") or None,
        onset=data.get("onset") or None,
        withdrawn_reason=data.get("withdrawn_reason") or None,
        investigation=_investigation(data),
    )


def _investigation(data: dict[str, Any]) -> Investigation:
    found = data.get("investigation")
    if not isinstance(found, dict):  # stored before investigations existed
        return legacy(
            data["fingerprint"],
            data["signal_id"],
            data["starts_at"],
            data.get("acknowledged_by") or None,
        )
    # Lua's cjson writes JSON null back as null; absent fields keep their defaults.
    fields = {k: v for k, v in found.items() if v is not None and k in _INVESTIGATION_FIELDS}
    return Investigation(**fields)


_INVESTIGATION_FIELDS = frozenset(Investigation.__dataclass_fields__)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def delivery_spec(
    receiver: str, fingerprint: str, transition: Transition, now_ms: int
) -> dict[str, Any]:
    return {
        "receiver": receiver,
        "fingerprint": fingerprint,
        "transition": transition,
        "enqueued_ms": now_ms,
        "attempts": 0,
    }
