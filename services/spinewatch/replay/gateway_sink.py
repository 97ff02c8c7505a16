"""Replaying through the HTTP gateway: batches of events, or a FHIR bundle, answered per item.

    POST /v1/events/batch   a JSON array of events  -> a result per event
    POST /fhir/r4           a FHIR R4 Bundle        -> a result per event mapped, then
                                                       one per document part that gave none

Every request carries `Authorization: Bearer <token>`. What the gateway
answers decides, item by item: accepted, duplicate, conflict, rejected,
forbidden are final; `retry` items are sent again. A request is repeated,
never skipped, when the gateway cannot take it now: 429 and 503 after the
`Retry-After` it names, a refused or dropped connection and any other 5xx
with capped exponential backoff. A 413 halves the batch for the rest of
the replay. 401 and 403 (the token) or any other 4xx end the replay
(`ReplayError`, exit 2): sending again would not change the answer. No
answer for `give_up_after_s` (429s aside: a gateway that rations is
answering) ends it with `SinkUnavailable` (exit 3), and the same command
resumes later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from spinewatch.errors import FieldError, ReplayError, SinkUnavailable
from spinewatch.replay.records import Outcome, Outgoing, Status
from spinewatch.runtime.failures import FailurePolicy

log = logging.getLogger(__name__)

BATCH_PATH = "/v1/events/batch"
FHIR_PATH = "/fhir/r4"
_FINAL = {status.value: status for status in Status}
_RETRY = "retry"
_MAX_WAIT_S = 600.0  # the longest Retry-After honoured as given
_REASON_CHARS = 300


class _TooLarge(Exception):
    """413: the request holds too many events or bytes for the gateway."""


@dataclass(frozen=True, slots=True)
class _Answer:
    status: str  # a Status value, or "retry"
    outcome: Outcome | None  # None for "retry"
    entry: str | None = None  # FHIR: the document part that gave no event


class GatewaySink:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        token: str,
        *,
        batch_events: int,
        give_up_after_s: float,
        policy: FailurePolicy | None = None,
    ) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self.batch_events = batch_events
        self.give_up_after_s = give_up_after_s
        self.policy = policy or FailurePolicy()

    async def send(self, items: Sequence[Outgoing]) -> list[Outcome]:
        """An outcome per item, in order, once the gateway gave each a final answer."""
        outcomes: list[Outcome | None] = [None] * len(items)
        pending = list(range(len(items)))
        since = time.monotonic()
        while pending:
            batch = pending[: self.batch_events]
            body = b"[" + b",".join(items[i].payload for i in batch) + b"]"
            try:
                answers, retry_after = await self._post(BATCH_PATH, body, "application/json", {})
            except _TooLarge:
                if self.batch_events == 1:
                    raise ReplayError(
                        "the gateway refused a single event as too large (413)"
                    ) from None
                self.batch_events = max(1, self.batch_events // 2)
                log.warning("the gateway said 413: batches of %d from now on", self.batch_events)
                continue
            _check_count(answers, len(batch))
            for i, answer in zip(batch, answers, strict=True):
                outcomes[i] = answer.outcome
            pending = [i for i in pending if outcomes[i] is None]
            if any(answer.outcome is not None for answer in answers):
                since = time.monotonic()
            if any(answer.outcome is None for answer in answers):
                await self._pause_for_retries(retry_after, since)
        return [outcome for outcome in outcomes if outcome is not None]

    async def send_bundle(
        self, raw: bytes, site_id: str | None
    ) -> list[tuple[str | None, Outcome]]:
        """Per item of the gateway's answer: the part of the document it names, and its outcome.

        Entries reference each other (an Observation its Procedure), so the
        bundle is never split, and it is sent whole again while any item
        says retry; items answered before keep their first answer.
        """
        params = {"site_id": site_id} if site_id else {}
        found: list[_Answer] | None = None
        since = time.monotonic()
        while True:
            try:
                answers, retry_after = await self._post(
                    FHIR_PATH, raw, "application/fhir+json", params
                )
            except _TooLarge:
                raise ReplayError(
                    "the gateway refused the bundle as too large (413); replay it with "
                    "--to kafka, which maps it here, or split it"
                ) from None
            if found is None:
                found = answers
            else:
                _check_count(answers, len(found))
                for i, answer in enumerate(answers):
                    if found[i].outcome is None and answer.outcome is not None:
                        found[i] = answer
                        since = time.monotonic()
            if all(answer.outcome is not None for answer in found):
                return [(a.entry, a.outcome) for a in found if a.outcome is not None]
            await self._pause_for_retries(retry_after, since)

    async def _pause_for_retries(self, retry_after: float | None, since: float) -> None:
        """Wait before sending `retry` items again; give up when none became final for long."""
        delay = min(_MAX_WAIT_S, retry_after or self.policy.retry_max_s)
        if time.monotonic() + delay - since > self.give_up_after_s:
            raise SinkUnavailable(
                f"the gateway kept answering retry for {self.give_up_after_s:g} s"
            )
        await asyncio.sleep(delay)

    async def _post(
        self, path: str, body: bytes, content_type: str, params: Mapping[str, str]
    ) -> tuple[list[_Answer], float | None]:
        """The per-item answers of one request, repeated until the gateway gives them."""
        since = time.monotonic()
        attempt = 0
        headers = self._headers | {"Content-Type": content_type}
        while True:
            try:
                async with self.session.post(
                    self.url + path, data=body, headers=headers, params=params
                ) as response:
                    status = response.status
                    payload = await response.read()
                    wait = _retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, payload, wait, problem = 0, b"", None, type(exc).__name__
            else:
                if status == 200:
                    return _answers(payload), wait
                problem = f"HTTP {status}"
                if status == 413:
                    raise _TooLarge
                if status in (401, 403):
                    raise ReplayError(
                        f"the gateway refused the token ({status}): {_reason(payload)}"
                    )
                if status < 500 and status != 429:
                    raise ReplayError(f"the gateway answered {status}: {_reason(payload)}")
            attempt += 1
            if status == 429:
                since = time.monotonic()  # rationed, not unavailable
            delay = wait if wait is not None else self.policy.backoff_s(attempt)
            if time.monotonic() + delay - since > self.give_up_after_s:
                raise SinkUnavailable(
                    f"the gateway at {self.url} gave no answer for "
                    f"{self.give_up_after_s:g} s (last: {problem})"
                )
            log.warning("gateway: %s; again in %.1f s", problem, delay)
            await asyncio.sleep(min(_MAX_WAIT_S, delay))


def _answers(payload: bytes) -> list[_Answer]:
    """The `results` of a 200, in index order; a malformed answer ends the replay."""
    try:
        body = json.loads(payload)
        results = sorted(body["results"], key=lambda r: int(r["index"]))
        answers = [_answer(result) for result in results]
        if [int(r["index"]) for r in results] != list(range(len(results))):
            raise ValueError("indexes")
    except (ValueError, KeyError, TypeError):
        raise ReplayError("the gateway's answer is not the documented batch answer") from None
    return answers


def _answer(result: Mapping[str, Any]) -> _Answer:
    status = str(result["status"])
    entry = result.get("entry")
    entry = None if entry is None else str(entry)[:_REASON_CHARS]
    if status == _RETRY:
        return _Answer(status, None, entry)
    errors = tuple(
        FieldError(_location(error["loc"]), str(error["type"]), str(error["msg"]))
        for error in result.get("errors") or ()
    )
    reason = result.get("reason")
    return _Answer(
        status,
        Outcome(_FINAL[status], errors, None if reason is None else str(reason)[:_REASON_CHARS]),
        entry,
    )


def _location(loc: Any) -> str:
    return ".".join(str(part) for part in loc) if isinstance(loc, list) else str(loc)


def _check_count(answers: Sequence[_Answer], expected: int) -> None:
    if len(answers) != expected:
        raise ReplayError(f"the gateway answered {len(answers)} items for a request of {expected}")


def _retry_after(header: str | None) -> float | None:
    """Retry-After in seconds (the gateway sends seconds; an HTTP date is not used)."""
    if header is None:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        return None


def _reason(payload: bytes) -> str:
    """The gateway's own explanation of a refused request (its reason or errors), shortened."""
    try:
        body = json.loads(payload)
    except ValueError:
        return "no explanation"
    if isinstance(body, dict):
        if "reason" in body:
            return str(body["reason"])[:_REASON_CHARS]
        if body.get("errors"):
            return str(body["errors"])[:_REASON_CHARS]
        if "detail" in body:
            return str(body["detail"])[:_REASON_CHARS]
    return "no explanation"
