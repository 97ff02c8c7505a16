"""The investigation of an alert: fired -> acknowledged -> investigating -> closed.

Registries with a defined response to a flag (Queensland Health's VLAD
programme, the UK National Joint Registry's outlier process) ask the same
of the unit: acknowledge the flag, investigate ("look back from the flag to
the patients"), document the finding, close. Each move is one step
forward; any other is refused with the current status and the one move
allowed next (`decide`). Pure: no I/O; the atomic decision in Redis
compares and sets the statuses defined here (`adapters/redis_investigations.py`).

Decisions, and why:

* The investigation status is orthogonal to firing/resolved. A chart back
  in control says the recent cases look like the baseline again; it says
  nothing about why the earlier ones did not, so it closes nothing. A
  resolved alert can still be acknowledged and investigated.
* One investigation per episode of concern: a new firing after the
  alert's investigation was closed opens a new one; a firing while one is
  still open (the chart resolved and signalled again before anyone closed
  it) joins it (`episodes` counts them), since the same review covers both.
* Sentinel and silence alerts are investigated like drift alerts, but have
  no chart to reset (`reset_refusal`).
* Who is the authenticated identity (a user code, `contracts.control.USER_PATTERN`),
  never a body field; when is the service's clock; why is `reason` (free
  text, length-capped). A closing names a finding from the documented list
  (`contracts.control.FINDINGS`) and may add a `note`, required for
  `other`. Free text (reason, note) goes to Redis, the history API and the
  audit topic only: never to logs, metrics, or webhook text.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, ValidationInfo, field_validator

from spinewatch.contracts.base import ClinicalInstant, Contract
from spinewatch.contracts.control import FINDINGS, Finding

Status = Literal["fired", "acknowledged", "investigating", "closed"]
Move = Literal["acknowledge", "investigate", "close"]
# What the history and the audit topic record: the moves' results, the
# firing that opened (or joined) the investigation, and a chart reset.
Step = Literal["fired", "acknowledged", "investigating", "closed", "chart_reset"]

# (status before, status after) of each move: the whole workflow.
MOVES: dict[Move, tuple[Status, Status]] = {
    "acknowledge": ("fired", "acknowledged"),
    "investigate": ("acknowledged", "investigating"),
    "close": ("investigating", "closed"),
}
NEXT_MOVE: dict[Status, Move | None] = {
    "fired": "acknowledge",
    "acknowledged": "investigate",
    "investigating": "close",
    "closed": None,
}
STATUSES: tuple[Status, ...] = ("fired", "acknowledged", "investigating", "closed")

REASON_MAX_CHARS = 500
NOTE_MAX_CHARS = 4000
# uuid5 namespace of investigation and reset ids (fixed: ids must be stable).
_NAMESPACE = uuid.UUID("9b1c7f5e-3f0e-5d2a-8a41-6a2f0e1c9d37")


@dataclass(frozen=True, slots=True)
class Investigation:
    """An alert's current investigation, as held with the alert (no free text)."""

    id: str
    status: Status
    opened_at: str  # RFC 3339
    episodes: int = 1  # firings covered (a firing while it is open joins it)
    updated_at: str | None = None
    updated_by: str | None = None
    finding: Finding | None = None
    reset_id: str | None = None  # the chart reset this closing decided, if any


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a move cannot be made now (an HTTP 409)."""

    status: Status
    allowed: Move | None
    message: str
    duplicate: bool = False  # the move was made already (a retry, or someone else)


ALREADY_RESET = Refusal("closed", None, "this investigation reset the chart already", True)


def decide(status: Status, move: Move) -> tuple[Status, Status] | Refusal:
    """The move's (from, to) if `status` allows it; else the refusal."""
    before, after = MOVES[move]
    if status == before:
        return before, after
    allowed = NEXT_MOVE[status]
    next_step = f"the next step is {allowed}" if allowed else "it is closed: nothing follows"
    message = f"cannot {move} an investigation that is {status}: {next_step}"
    return Refusal(status, allowed, message, duplicate=status == after)


def reset_refusal(investigation: Investigation, has_chart: bool) -> Refusal | None:
    """None when a chart reset may follow this investigation now."""
    allowed = NEXT_MOVE[investigation.status]
    if not has_chart:
        return Refusal(investigation.status, allowed, "no chart to reset: not a drift alert")
    if investigation.status != "closed":
        return Refusal(
            investigation.status,
            allowed,
            f"a chart is reset only by closing its investigation; it is {investigation.status}"
            f", the next step is {allowed}",
        )
    if investigation.reset_id is not None:
        return ALREADY_RESET
    return None


def investigation_id(fingerprint: str, firing_id: str) -> str:
    """Stable: the same firing opens the same investigation, however often it is read."""
    return str(uuid.uuid5(_NAMESPACE, f"investigation|{fingerprint}|{firing_id}"))


def reset_id(investigation: str, fingerprint: str) -> uuid.UUID:
    """The reset's idempotency key: a retried publication carries the same id."""
    return uuid.uuid5(_NAMESPACE, f"chart.reset|{investigation}|{fingerprint}")


def transition_id(investigation: str, step: Step) -> str:
    """One id per step of an investigation (each step happens once in it)."""
    return f"{investigation}:{step}"


def opened(fingerprint: str, firing_id: str, at: str) -> Investigation:
    return Investigation(investigation_id(fingerprint, firing_id), "fired", at)


def legacy(fingerprint: str, signal_id: str, at: str, acknowledged_by: str | None) -> Investigation:
    """An alert stored before investigations existed: its implicit one."""
    status: Status = "acknowledged" if acknowledged_by else "fired"
    return Investigation(investigation_id(fingerprint, signal_id), status, at)


def entry(
    step: Step,
    investigation: str,
    *,
    at: str,
    by: str | None,
    reason: str | None = None,
    firing_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One history record: who, when, why (and what was found, for a closing)."""
    record: dict[str, Any] = {
        "id": firing_id or transition_id(investigation, step),
        "investigation_id": investigation,
        "transition": step,
        "at": at,
        "by": by,
        "reason": reason,
        "finding": None,
        "note": None,
    }
    return record | extra


# -- request bodies: extra fields refused, free text capped -------------------------------

Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=REASON_MAX_CHARS)
]
Note = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=NOTE_MAX_CHARS)
]


class AcknowledgeBody(Contract):
    """`POST /alerts/{fp}/ack`: an optional reason; who is the caller's identity."""

    reason: Reason | None = None


class InvestigateBody(Contract):
    """`POST /alerts/{fp}/investigate`: why it is being looked into (e.g. who reviews it)."""

    reason: Reason


class CloseBody(Contract):
    """`POST /alerts/{fp}/close`: the finding, its note, why, and what to do with the chart."""

    finding: Finding = Field(description=f"One of: {', '.join(FINDINGS)}.")
    note: Note | None = None
    reason: Reason
    chart_action: Literal["none", "reset"] = "none"
    reset_effective_after: ClinicalInstant | None = None

    # Field validators, not a model validator, so the error names the field
    # (validate_default is on: they run when the field is left out, too).
    @field_validator("note")
    @classmethod
    def _note_for_other(cls, note: str | None, info: ValidationInfo) -> str | None:
        if note is None and info.data.get("finding") == "other":
            raise ValueError("a finding of 'other' needs a note saying what was found")
        return note

    @field_validator("reset_effective_after")
    @classmethod
    def _with_a_reset(cls, instant: datetime | None, info: ValidationInfo) -> datetime | None:
        if instant is not None and info.data.get("chart_action") != "reset":
            raise ValueError("reset_effective_after goes with chart_action 'reset'")
        return instant


class ResetBody(Contract):
    """`POST /alerts/{fp}/reset`: reset the chart after a closed investigation."""

    reason: Reason
    effective_after: ClinicalInstant | None = None


def in_the_future(instant: datetime | None, now: datetime) -> bool:
    """A reset takes effect from cases already performed, never ahead of the clock."""
    return instant is not None and instant > now
