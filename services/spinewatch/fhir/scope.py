"""What the resource mappers share: the context, the document, the procedures.

Also the two things every event needs: its envelope (pseudonymous ids,
times) and the subject's identity, checked to be a Patient.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from uuid import UUID

from fhir.resources.R4B.reference import Reference

from spinewatch.contracts.envelope import SCHEMA_VERSION
from spinewatch.contracts.vocabulary import RetractionReason
from spinewatch.fhir import pseudonyms
from spinewatch.fhir.context import FhirContext
from spinewatch.fhir.elements import clinical_time, unmappable
from spinewatch.fhir.references import Document, Entry


class ProcedureState(Enum):
    MAPPED = "mapped"
    REJECTED = "rejected"
    RETRACTED = "retracted"


@dataclass(frozen=True)
class ProcedureFacts:
    """What follow-ups of an in-document Procedure need to know about it."""

    state: ProcedureState
    label: str
    performed: datetime | None = None
    patient: str | None = None  # subject identity (never leaves the mapping)


@dataclass
class Scope:
    ctx: FhirContext
    document: Document
    known: Mapping[UUID, datetime]
    procedures: dict[str, ProcedureFacts] = field(default_factory=dict)

    def procedure_id(self, identity: str) -> UUID:
        return pseudonyms.procedure_id(self.ctx.pseudonym_key, self.ctx.source, identity)

    def event_id(self, event_type: str, identity: str) -> UUID:
        return pseudonyms.event_id(self.ctx.pseudonym_key, self.ctx.source, event_type, identity)

    def envelope(
        self,
        event_type: str,
        identity: str,
        *,
        patient: str,
        procedure: str,
        occurred_at: datetime,
        recorded_at: datetime,
    ) -> dict[str, Any]:
        key, source = self.ctx.pseudonym_key, self.ctx.source
        return {
            "event_id": str(self.event_id(event_type, identity)),
            "event_type": event_type,
            "schema_version": SCHEMA_VERSION,
            "occurred_at": occurred_at.isoformat(),
            "recorded_at": recorded_at.isoformat(),
            "source": source,
            "site_id": self.ctx.site_id,
            "patient_ref": str(pseudonyms.patient_ref(key, source, patient)),
            "procedure_id": str(self.procedure_id(procedure)),
        }

    def retraction(
        self,
        target_type: str,
        identity: str,
        *,
        patient: str,
        procedure: str,
        occurred_at: datetime,
        recorded_at: datetime,
    ) -> dict[str, Any]:
        """`event.retracted` of the event `identity` mapped to (or would have)."""
        payload = self.envelope(
            "event.retracted",
            identity,
            patient=patient,
            procedure=procedure,
            occurred_at=occurred_at,
            recorded_at=recorded_at,
        )
        payload["target_event_id"] = str(self.event_id(target_type, identity))
        payload["reason"] = RetractionReason.ENTERED_IN_ERROR.value
        return payload

    def recorded_at(self, resource: Any, own: object = None, own_location: str = "") -> datetime:
        """When the source recorded it: own record time, else meta.lastUpdated, else receipt."""
        if own is not None:
            return clinical_time(own, own_location)
        meta = getattr(resource, "meta", None)
        if meta is not None and meta.lastUpdated is not None:
            return clinical_time(meta.lastUpdated, f"{type(resource).__name__}.meta.lastUpdated")
        return self.ctx.received_at

    def placement(self, identity: str, patient: str, location: str, subject: str) -> datetime:
        """Performed start of the Procedure a follow-up or complication points at."""
        facts = self.procedures.get(identity)
        if facts is None and identity not in self.document.procedure_identities():
            performed = self.known.get(self.procedure_id(identity))
            if performed is None:
                raise unmappable(
                    location,
                    "unknown_procedure",
                    "points at a Procedure neither in this document nor known to spinewatch "
                    "from this source (send the Procedure first, or in the same Bundle)",
                )
            # The gateway stores FhirMapping.procedures_performed (UTC); a
            # store that dropped the offset gave back UTC all the same.
            return performed if performed.utcoffset() is not None else performed.replace(tzinfo=UTC)
        if facts is None or facts.state is ProcedureState.REJECTED:
            shown = facts.label if facts else "a Procedure of this document"
            raise unmappable(
                location, "procedure_rejected", f"points at {shown}, which was rejected"
            )
        if facts.state is ProcedureState.RETRACTED or facts.performed is None:
            raise unmappable(
                location, "procedure_retracted", f"points at {facts.label}, entered in error"
            )
        if facts.patient != patient:
            raise unmappable(
                subject, "subject_mismatch", f"names another patient than {facts.label}"
            )
        return facts.performed


def subject_identity(document: Document, subject: Reference | None, location: str) -> str:
    """The identity of the Patient a resource is about (hashed, never shown)."""
    if subject is None:
        raise unmappable(location, "missing_subject", "a Patient reference is required")
    if subject.type is not None and subject.type != "Patient":
        raise unmappable(location, "subject_not_patient", "must reference a Patient")
    if subject.reference is not None:
        resolved = document.resolve(subject.reference)
        if resolved is None or resolved[0] != "Patient":
            raise unmappable(
                location,
                "subject_not_patient",
                "must be Patient/<id>, a conditional Patient?<query>, or the fullUrl of a "
                "Patient entry of this Bundle",
            )
        return resolved[1]
    identifier = subject.identifier
    if identifier is not None and identifier.system and identifier.value:
        # Spelled like the conditional reference that says the same.
        return f"Patient?identifier={identifier.system}|{identifier.value}"
    raise unmappable(
        location, "missing_subject", "needs reference, or identifier with system and value"
    )


def entry_identity(entry: Entry, resource_type: str) -> str:
    if entry.identity is None:
        raise unmappable(
            resource_type,
            "missing_identity",
            "needs an id (or a PUT url, a conditional create, or a fullUrl): the event id is "
            "derived from it, so a resend is recognised as the same event",
        )
    return entry.identity
