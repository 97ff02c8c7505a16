"""A FHIR document -> events and rejects: the order of work, and rules across entries.

Procedures are mapped first (their performed times place the follow-ups
and complications), then every other entry in document order. Each entry
yields its events or one reject, never both. A mapped event is parsed by
`parse_event` from its JSON, exactly as a native event would be.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final
from uuid import UUID

from fhir.resources.R4B.adverseevent import AdverseEvent
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.procedure import Procedure

from spinewatch.contracts.registry import ROOT, Event, parse_event
from spinewatch.errors import FieldError, InvalidEvent
from spinewatch.fhir import pseudonyms
from spinewatch.fhir.complication import map_adverse_event
from spinewatch.fhir.context import FhirContext, FhirMapping, FhirReject
from spinewatch.fhir.followup import map_observation
from spinewatch.fhir.procedure import map_procedure
from spinewatch.fhir.references import SUPPORT_TYPES, Document, Entry
from spinewatch.fhir.scope import ProcedureFacts, ProcedureState, Scope
from spinewatch.fhir.validation import validate

ACCEPTED_BUNDLES: Final = ("transaction", "collection")
_WRITES: Final = (None, "POST", "PUT")
DOCUMENT: Final = "document"
NO_PROCEDURES: Final[Mapping[UUID, datetime]] = MappingProxyType({})


def read_document(document: object) -> Document | FhirReject:
    """The entries of a document, or the one reject that says it is not one we take."""
    if not isinstance(document, Mapping) or not isinstance(document.get("resourceType"), str):
        return _document_reject(
            ROOT, "not_fhir", "a FHIR document is a JSON object with a resourceType"
        )
    if document["resourceType"] != "Bundle":
        return Document.single(document)
    if document.get("type") not in ACCEPTED_BUNDLES:
        return _document_reject(
            "Bundle.type", "unsupported_bundle", "must be transaction or collection"
        )
    entries = document.get("entry", [])
    if not isinstance(entries, list):
        return _document_reject("Bundle.entry", "not_fhir", "must be an array of entries")
    return Document.bundle(entries)


def map_document(
    document: object, ctx: FhirContext, known: Mapping[UUID, datetime] = NO_PROCEDURES
) -> FhirMapping:
    read = read_document(document)
    if isinstance(read, FhirReject):
        return FhirMapping((), (read,), NO_PROCEDURES)
    run = _Run(Scope(ctx, read, known))
    for entry in read.entries:
        if entry.resource_type == "Procedure":
            run.procedure(entry)
    for entry in read.entries:
        if entry.resource_type != "Procedure":
            run.other(entry)
    return run.result()


def referenced_procedures(document: object, ctx: FhirContext) -> frozenset[UUID]:
    read = read_document(document)
    if isinstance(read, FhirReject):
        return frozenset()
    inside = read.procedure_identities()
    outside = {
        identity
        for entry in read.entries
        for identity in read.procedure_references(entry)
        if identity not in inside
    }
    return frozenset(
        pseudonyms.procedure_id(ctx.pseudonym_key, ctx.source, identity) for identity in outside
    )


def _document_reject(location: str, code: str, message: str) -> FhirReject:
    return FhirReject(DOCUMENT, (FieldError(location, code, message),))


class _Run:
    """One mapping: the events so far, by id, and the rejects by position."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.events: list[Event] = []
        self.by_id: dict[UUID, tuple[str, Event]] = {}
        self.rejects: list[tuple[int, FhirReject]] = []
        self.performed: dict[UUID, datetime] = {}

    def procedure(self, entry: Entry) -> None:
        mapped = None
        try:
            self._check_entry(entry)
            mapped = map_procedure(self.scope, entry, validate(Procedure, entry.resource or {}))
        except InvalidEvent as exc:
            self._reject(entry, exc.errors)
        event = self._accept(entry, mapped.payload) if mapped is not None else None
        if entry.identity is None or entry.identity in self.scope.procedures:
            return  # the first entry of an identity speaks for it
        if mapped is None or event is None:
            facts = ProcedureFacts(ProcedureState.REJECTED, entry.label)
        elif mapped.performed is None:
            facts = ProcedureFacts(ProcedureState.RETRACTED, entry.label)
        else:
            facts = ProcedureFacts(
                ProcedureState.MAPPED, entry.label, mapped.performed, mapped.patient
            )
            self.performed[event.procedure_id] = mapped.performed.astimezone(UTC)
        self.scope.procedures[entry.identity] = facts

    def other(self, entry: Entry) -> None:
        kind = entry.resource_type
        try:
            self._check_entry(entry)
            if kind == "Observation":
                observation = validate(Observation, entry.resource or {})
                payload = map_observation(self.scope, entry, observation)
            elif kind == "AdverseEvent":
                adverse_event = validate(AdverseEvent, entry.resource or {})
                payload = map_adverse_event(self.scope, entry, adverse_event)
            elif kind in SUPPORT_TYPES and entry.position is not None:
                return  # supports the mapped entries: read only through their references
            elif kind in SUPPORT_TYPES:
                raise _unmapped(
                    "maps to no event on its own; send it in a Bundle with the Procedure, "
                    "Observation or AdverseEvent that references it"
                )
            else:
                raise _unmapped(
                    "is not a resource type spinewatch maps (Procedure, Observation, "
                    "AdverseEvent; Condition and the Patient, Practitioner, Organization, "
                    "Location, Encounter and Device they reference are read or ignored)"
                )
        except InvalidEvent as exc:
            self._reject(entry, exc.errors)
            return
        self._accept(entry, payload)

    def _check_entry(self, entry: Entry) -> None:
        if entry.method not in _WRITES:
            raise InvalidEvent(
                [
                    FieldError(
                        "Bundle.entry.request.method",
                        "unsupported_method",
                        "only POST and PUT carry a resource to map; to retract, send the "
                        "resource with status entered-in-error",
                    )
                ]
            )
        if entry.resource is None or entry.resource_type is None:
            raise InvalidEvent(
                [FieldError("Bundle.entry.resource", "not_fhir", "needs a resource with a type")]
            )

    def _accept(self, entry: Entry, payload: dict[str, Any]) -> Event | None:
        try:
            event = parse_event(json.dumps(payload))
        except InvalidEvent as exc:
            self._reject(entry, tuple(_as_event_error(e) for e in exc.errors))
            return None
        seen = self.by_id.get(event.event_id)
        if seen is None:
            self.by_id[event.event_id] = (entry.label, event)
            self.events.append(event)
            return event
        if seen[1] == event:
            return event  # the same resource twice in one document: one event
        self._reject(
            entry,
            (
                FieldError(
                    entry.resource_type or DOCUMENT,
                    "conflicting_duplicate",
                    f"has the identity of {seen[0]} but different content",
                ),
            ),
        )
        return None

    def _reject(self, entry: Entry, errors: tuple[FieldError, ...]) -> None:
        position = -1 if entry.position is None else entry.position
        self.rejects.append((position, FhirReject(entry.label, errors)))

    def result(self) -> FhirMapping:
        rejects = tuple(reject for _, reject in sorted(self.rejects, key=lambda r: r[0]))
        return FhirMapping(tuple(self.events), rejects, MappingProxyType(dict(self.performed)))


def _unmapped(message: str) -> InvalidEvent:
    return InvalidEvent([FieldError("resourceType", "unsupported_resource", message)])


def _as_event_error(error: FieldError) -> FieldError:
    """A contract error, located in the mapped event rather than the FHIR resource."""
    location = "event" if error.location == ROOT else f"event.{error.location}"
    return FieldError(location, error.code, error.message)
