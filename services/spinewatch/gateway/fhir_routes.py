"""`POST /fhir/r4`: a FHIR R4 Bundle (transaction or collection) or one resource.

The mapping itself is pure and lives in `spinewatch.fhir` (table in
schemas/fhir/README.md); this route gives it the authenticated sender
(the credential's source, the site from `?site_id=`, needed only when the
credential has several sites), the pseudonym key and the time of receipt,
and writes what it maps through the same intake as `/v1/events`: each
event is claimed, written with acks=all and answered on its own.

A standalone Observation or AdverseEvent refers to a Procedure sent
earlier: the performed time of every Procedure the gateway wrote is kept
in Redis (`{prefix}:procedure:{procedure_id}`, for the idempotency
retention), and those a document refers to are read before mapping.

The answer has the batch shape, one item per event mapped, then one per
document part that gave none (`entry` names its position, never an id).
The route exists only when `SPINEWATCH_GATEWAY_PSEUDONYM_KEY` is set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import FastAPI, Query, Request, Security
from fastapi.responses import JSONResponse, Response
from pydantic_core import from_json

from spinewatch.contracts import Event, ProcedurePerformed
from spinewatch.fhir import FhirContext, FhirMapping, map_fhir, referenced_procedures
from spinewatch.gateway.auth import Refusal, SourceGrant
from spinewatch.gateway.bodies import Refused, read_body, require_json
from spinewatch.gateway.intake import Candidate, Outcome, Result, screen
from spinewatch.gateway.openapi import FHIR_TYPES, REFUSALS, EventAnswer, FhirAnswer, json_body
from spinewatch.gateway.state import Gateway, Unavailable
from spinewatch.runtime.log_repeats import RepeatLimit

log = logging.getLogger(__name__)
# A fault that hits every request (Redis away) is one line per 10 s, with a count.
log.addFilter(RepeatLimit(loggers=(__name__,)))

SITE_PATTERN = r"^[a-z0-9][a-z0-9-]{1,31}$"  # contracts.base.SiteId
_WRITTEN = (Outcome.ACCEPTED, Outcome.DUPLICATE)


def add_fhir_route(app: FastAPI, gateway: Gateway, pseudonym_key: bytes, bearer: Any) -> None:
    """Mount `POST /fhir/r4` on `app`."""
    settings = gateway.settings

    @app.post(
        "/fhir/r4",
        summary="Write the events of a FHIR R4 Bundle or resource, with a result per item",
        dependencies=[Security(bearer)],
        response_model=FhirAnswer,
        responses={
            403: {"model": EventAnswer, "description": "site_id not granted to this credential."},
            422: {"model": EventAnswer, "description": "Not a JSON object, or site_id missing."},
            503: {"model": EventAnswer, "description": "Redis unavailable; retry."},
            **REFUSALS,
        },
        openapi_extra=json_body(
            {
                "type": "object",
                "required": ["resourceType"],
                "properties": {"resourceType": {"type": "string"}},
            },
            f"A FHIR R4 Bundle (at most {settings.max_batch_events} entries, "
            f"{settings.max_batch_bytes} bytes) or a single resource.",
            FHIR_TYPES,
        ),
    )
    async def post_fhir(
        request: Request,
        site_id: Annotated[
            str | None,
            Query(pattern=SITE_PATTERN, description="Needed when the credential has several."),
        ] = None,
    ) -> Response:
        grant = gateway.grant(request)
        require_json(request, FHIR_TYPES)
        site = _site(grant, site_id)
        raw = await read_body(request, settings.max_batch_bytes)
        document = _document(raw, settings.max_batch_events)
        await gateway.spend(grant, max(1, len(document.get("entry") or ())))
        ctx = FhirContext(grant.source, site, pseudonym_key, datetime.now(UTC))
        known = await _known_procedures(gateway, referenced_procedures(document, ctx))
        mapping: FhirMapping = await asyncio.to_thread(map_fhir, document, ctx, known)
        items: list[Candidate | Result] = [
            screen(event, grant, settings.max_body_bytes, _fingerprint(event, ctx))
            for event in mapping.events
        ]
        items += [Result(Outcome.REJECTED, errors=reject.errors) for reject in mapping.rejects]
        results = await gateway.intake.admit(items)
        await _remember_procedures(gateway, mapping, results)
        entries = [None] * len(mapping.events) + [r.entry for r in mapping.rejects]
        return JSONResponse(_answer(results, entries), 200, headers=gateway.retry_headers(results))


def _fingerprint(event: Event, ctx: FhirContext) -> bytes | None:
    """The content that makes a re-sent document a duplicate, not a conflict.

    A resource without a record time of its own (no `issued`, `recordedDate`,
    `meta.lastUpdated`) is recorded at its receipt (`received_at`), which
    differs on every retry of the same document; the receipt time is ours,
    not the sender's content, so it is left out of the comparison. The
    event written first keeps its receipt time.
    """
    if event.recorded_at != ctx.received_at:
        return None
    return event.model_dump_json(exclude={"recorded_at"}).encode()


def _site(grant: SourceGrant, asked: str | None) -> str:
    if asked is None:
        if len(grant.sites) == 1:
            return grant.sites[0]
        raise Refused(
            422,
            Refusal.SITE_ID_MISSING,
            "this credential writes for several sites: name one with ?site_id=",
        )
    if asked not in grant.sites:
        raise Refused(
            403,
            Refusal.SITE_NOT_GRANTED,
            "this credential writes only for sites "
            + ", ".join(repr(site) for site in grant.sites)
            + "; site_id is not one of them",
        )
    return asked


def _document(raw: bytes, most: int) -> dict[str, Any]:
    try:
        document = from_json(raw, allow_inf_nan=False)
    except ValueError:
        raise Refused(422, Refusal.JSON_INVALID, "the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise Refused(422, Refusal.NOT_AN_OBJECT, "the body must be a FHIR resource (an object)")
    entries = document.get("entry")
    if isinstance(entries, list) and len(entries) > most:
        raise Refused(413, Refusal.TOO_MANY_EVENTS, f"a Bundle holds at most {most} entries")
    return document


async def _known_procedures(gateway: Gateway, ids: frozenset[UUID]) -> Mapping[UUID, datetime]:
    ordered = sorted(ids)
    try:
        found = await gateway.intake.store.recall([f"procedure:{i}" for i in ordered])
    except Exception as exc:
        reason = f"the procedure store (Redis) is unavailable ({type(exc).__name__})"
        raise Unavailable(reason) from None
    return {
        procedure_id: datetime.fromisoformat(value)
        for procedure_id, value in zip(ordered, found, strict=True)
        if value is not None
    }


async def _remember_procedures(
    gateway: Gateway, mapping: FhirMapping, results: list[Result]
) -> None:
    written = {
        event.procedure_id
        for event, result in zip(mapping.events, results, strict=False)
        if isinstance(event, ProcedurePerformed) and result.outcome in _WRITTEN
    }
    facts = {
        f"procedure:{procedure_id}": performed.isoformat()
        for procedure_id, performed in mapping.procedures_performed.items()
        if procedure_id in written
    }
    try:
        await gateway.intake.store.remember(facts)
    except Exception as exc:
        # The events are written; only a later standalone Observation of these
        # procedures is rejected (unknown_procedure) until they are sent again.
        log.warning("gateway: %d procedure times not recorded (%s)", len(facts),
                    type(exc).__name__)  # fmt: skip


def _answer(results: list[Result], entries: list[str | None]) -> dict[str, Any]:
    body: dict[str, Any] = {o.value: sum(1 for r in results if r.outcome is o) for o in Outcome}
    body["results"] = [
        {"index": i, **result.as_json(), **({"entry": entry} if entry else {})}
        for i, (result, entry) in enumerate(zip(results, entries, strict=True))
    ]
    return body
