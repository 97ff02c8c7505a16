"""Who may write what: a token per hospital source, bound to the sites it may write.

A credential (`spinewatch.runtime.credentials`) names one `source` (the
emitting system, as events carry it) and the `site_id`s it writes for. An
event is written only when both match, so one hospital's interface engine
cannot write, or overwrite, another's events: a stolen token is worth one
source at its own sites. Refusals carry a bounded code (a metric label)
and a reason that names the credential's own grant, never the event's
values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import Field

from spinewatch.contracts import Event
from spinewatch.contracts.base import SiteId, SourceSystem
from spinewatch.runtime.credentials import CredentialStore, Grant


class SourceGrant(Grant):
    """What one gateway token may write."""

    source: SourceSystem
    sites: tuple[SiteId, ...] = Field(min_length=1, max_length=1000)
    # Events per minute for this source; None: the gateway's default.
    rate_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)


class Refusal(StrEnum):
    """Why a request or an event was refused before validation or writing (metric labels)."""

    UNAUTHENTICATED = "unauthenticated"
    WRONG_SOURCE = "wrong_source"
    SITE_NOT_GRANTED = "site_not_granted"
    TOO_LARGE = "too_large"
    TOO_MANY_EVENTS = "too_many_events"
    RATE_LIMITED = "rate_limited"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    JSON_INVALID = "json_invalid"  # pydantic's type for the same fault in a single event
    NOT_AN_ARRAY = "not_an_array"
    NOT_AN_OBJECT = "not_an_object"
    SITE_ID_MISSING = "site_id_missing"
    EMPTY_BATCH = "empty_batch"


@dataclass(frozen=True, slots=True)
class Forbidden:
    code: Refusal
    reason: str


def load_credentials(path: Path) -> CredentialStore[SourceGrant]:
    return CredentialStore.from_file(path, SourceGrant)


def authorise(grant: SourceGrant, event: Event) -> Forbidden | None:
    """None when `grant` may write `event`; else why not (naming the grant, not the event)."""
    if event.source != grant.source:
        return Forbidden(
            Refusal.WRONG_SOURCE,
            f"this credential writes only for source {grant.source!r}; the event's source differs",
        )
    if event.site_id not in grant.sites:
        return Forbidden(
            Refusal.SITE_NOT_GRANTED,
            "this credential writes only for sites "
            + ", ".join(repr(site) for site in grant.sites)
            + "; the event's site_id is not one of them",
        )
    return None
