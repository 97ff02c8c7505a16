"""What happens to a message that fails: one typed policy, in one place.

Every message either counts or is dead-lettered; nothing stalls the stream.
The rule for each way a message can fail, wherever it fails:

| where                                   | what failed                        | action       |
| --------------------------------------- | ---------------------------------- | ------------ |
| triage (ingest, per message)            | too large, too deep, bad JSON,     | DEAD_LETTER  |
|                                         | contract violation                 |              |
| triage (ingest, per message)            | any other exception (a bug, a      | DEAD_LETTER  |
|                                         | crashed child process)             | internal_error |
| apply (per fact batch)                  | unsigned or badly signed batch,    | DEAD_LETTER  |
|                                         | unreadable batch, any exception    |              |
| writing a dead letter, a fact batch,    | broker refused or timed out        | RETRY, with  |
| a drift message; recording a drift      |                                    | capped       |
| message in Redis                        |                                    | backoff      |
| anywhere                                | cancellation, interpreter exit     | RAISE        |

A RETRY never skips the message: the loop holds it (and so its offset)
until the write succeeds. If it cannot within the supervisor's give-up time,
health turns red and the process exits non-zero, so that an orchestrator
restarts it and the message is read again from the last committed offset.

Reasons are a bounded metric label. An error never carries the offending
value, and for an exception only its type is kept: its message may quote
the input.
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from itertools import accumulate
from typing import Protocol

from spinewatch.errors import FieldError


class RejectReason(StrEnum):
    """Why a message was dead-lettered: a bounded metric label."""

    MESSAGE_TOO_LARGE = "message_too_large"
    NESTING_TOO_DEEP = "nesting_too_deep"
    INVALID_JSON = "invalid_json"
    NOT_AN_EVENT = "not_an_event"  # valid JSON, but neither an object nor an array
    EMPTY_BATCH = "empty_batch"  # a bulk message with no events in it
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    SCHEMA_VIOLATION = "schema_violation"
    # Processing one message raised: a defect of ours, not of the message;
    # the message is kept so that it can be replayed once fixed.
    INTERNAL_ERROR = "internal_error"
    # A fact batch on the internal topic that this release cannot apply.
    UNREADABLE_FACTS = "unreadable_facts"
    # A fact batch or drift message whose signature does not verify
    # (adapters/message_signing.py): written by something without the key.
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"


class _Labelled(Protocol):
    def labels(self, *values: str) -> object: ...


def export_at_zero(counter: _Labelled, reasons: Iterable[StrEnum]) -> None:
    """Export a reason-labelled counter at 0 for every reason, from the start.

    Prometheus's `increase()` cannot see a series' first increment when the
    series did not exist before it: absent -> 1 reads as no increase, so the
    dead-letter rules (deploy/prometheus/rules.yml) stayed quiet for the first
    dead letter of each reason in a process (seen against a real Prometheus:
    one dead letter, `increase(...[15m])` 0, no alert).
    """
    for reason in reasons:
        counter.labels(reason.value)


class Stage(StrEnum):
    TRIAGE = "triage"
    APPLY = "apply"
    WRITE = "write"  # a dead letter, a fact batch or a drift message to the broker
    RECORD = "record"  # a drift message into the alert state (Redis)


class Action(enum.Enum):
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"
    RAISE = "raise"


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """The decision for a failure, and the backoff between retries."""

    retry_base_s: float = 0.2
    retry_max_s: float = 5.0

    def decide(self, stage: Stage, exc: BaseException) -> Action:
        if not isinstance(exc, Exception) or isinstance(exc, asyncio.CancelledError):
            return Action.RAISE  # stopping: never swallow cancellation or exit
        if stage in (Stage.TRIAGE, Stage.APPLY):
            return Action.DEAD_LETTER  # the message is the problem, or a bug is
        return Action.RETRY  # the infrastructure is: the message must not be skipped

    def backoff_s(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1-based): doubling, capped."""
        return float(min(self.retry_max_s, self.retry_base_s * 2 ** max(0, attempt - 1)))


def internal_error(exc: BaseException) -> FieldError:
    """The field error of a message whose processing raised: the type, never the text."""
    return FieldError(
        "<root>",
        "internal_error",
        f"processing raised {type(exc).__name__}; the message is kept for replay",
    )


@dataclass(frozen=True, slots=True)
class InputLimits:
    """Bounds on an inbound message, checked before any unbounded decoder runs."""

    max_message_bytes: int = 8 << 20
    # A valid bulk message nests 6 deep (array, event, levels, level,
    # leakage sites, site); 32 leaves room for any future contract while
    # staying far from the recursion limits of the decoders (msgspec raised
    # RecursionError on 1,500 nested brackets and killed the ingest agent).
    max_nesting_depth: int = 32


def too_large(raw: bytes, limits: InputLimits) -> FieldError | None:
    if len(raw) <= limits.max_message_bytes:
        return None
    return FieldError(
        "<root>",
        RejectReason.MESSAGE_TOO_LARGE.value,
        f"message of {len(raw)} bytes exceeds the limit of {limits.max_message_bytes} bytes",
    )


def too_deep(raw: bytes, limits: InputLimits) -> FieldError | None:
    depth = nesting_depth(raw)
    if depth <= limits.max_nesting_depth:
        return None
    return FieldError(
        "<root>",
        RejectReason.NESTING_TOO_DEEP.value,
        f"JSON nested deeper than {limits.max_nesting_depth} levels",
    )


# Every byte but the ones that shape JSON: brackets, quotes and backslashes.
_NOT_STRUCTURAL = bytes(range(256)).translate(None, b'[]{}"\\')
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def nesting_depth(raw: bytes) -> int:
    """The deepest bracket nesting of a JSON text, without decoding it.

    Strings are skipped (a bracket inside one is not structure); mismatched
    or unbalanced brackets still count by their openers, so a text that is
    not JSON at all gets a depth too. Costs about 10 ms per MB of events,
    which is why callers run it only where an unbounded decoder follows.
    """
    # Escapes go first, on the text itself: an escaped quote is not a quote,
    # and an escaped letter must not pair its backslash with a bracket.
    shape = _QUOTED.sub(b"", _ESCAPE.sub(b"", raw).translate(None, _NOT_STRUCTURAL))
    if not shape:
        return 0
    # Not max(0, *...): that unpacks one argument per structural byte.
    return max(0, max(accumulate(_DEPTH_STEP.get(byte, 0) for byte in shape), default=0))


_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_QUOTED = re.compile(rb'"[^"]*(?:"|$)')
