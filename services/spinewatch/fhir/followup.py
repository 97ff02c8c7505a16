"""Observation (pain, LOINC 72514-3) -> `followup.recorded`, or its retraction.

The Observation names its Procedure by `partOf` or `focus`; its effective
time, counted in UTC calendar days from the procedure's start, gives the
timepoint (codes.TIMEPOINT_WINDOWS). The day count always travels along.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from fhir.resources.R4B.observation import Observation

from spinewatch.errors import InvalidEvent
from spinewatch.fhir import codes
from spinewatch.fhir.elements import (
    clinical_time,
    days_between,
    has_coding,
    reject_modifier_extensions,
    unmappable,
)
from spinewatch.fhir.references import Entry
from spinewatch.fhir.scope import Scope, entry_identity, subject_identity

EVENT_TYPE: Final = "followup.recorded"
MAPPED_STATUSES: Final = frozenset({"final", "amended", "corrected"})


def the_procedure(scope: Scope, entry: Entry, resource_type: str, element: str) -> str:
    """Identity of the one Procedure a follow-up or complication points at."""
    found = set(scope.document.procedure_references(entry))
    if not found:
        raise unmappable(
            f"{resource_type}.{element}",
            "missing_procedure",
            "must reference the Procedure (Procedure/<id>, or the fullUrl of a Procedure "
            "entry of this Bundle)",
        )
    if len(found) > 1:
        raise unmappable(
            f"{resource_type}.{element}", "ambiguous_procedure", "references several Procedures"
        )
    return found.pop()


def map_observation(scope: Scope, entry: Entry, obs: Observation) -> dict[str, Any]:
    reject_modifier_extensions(obs, "Observation")
    identity = entry_identity(entry, "Observation")
    patient = subject_identity(scope.document, obs.subject, "Observation.subject")
    procedure = the_procedure(scope, entry, "Observation", "partOf")
    # Before the status: an observation of another kind never mapped, so
    # there is nothing of it to retract either.
    if not has_coding(obs.code, codes.LOINC, codes.PAIN_SEVERITY_NRS):
        raise unmappable(
            "Observation.code",
            "wrong_observation_code",
            f"must carry LOINC {codes.PAIN_SEVERITY_NRS} (pain severity 0-10); "
            "spinewatch maps no other observation",
        )
    if obs.status == "entered-in-error":
        recorded = scope.recorded_at(obs, obs.issued, "Observation.issued")
        occurred = _effective_or(obs, recorded)
        return scope.retraction(
            EVENT_TYPE,
            identity,
            patient=patient,
            procedure=procedure,
            occurred_at=occurred,
            recorded_at=recorded,
        )
    if obs.status not in MAPPED_STATUSES:
        raise unmappable(
            "Observation.status",
            "status_not_final",
            "must be final, amended or corrected (or entered-in-error, which retracts)",
        )
    vas = _pain_score(obs)
    performed = scope.placement(procedure, patient, "Observation.partOf", "Observation.subject")
    effective = _effective(obs)
    days = days_between(performed, effective)
    if days < 0:
        raise unmappable(
            "Observation.effective[x]",
            "before_procedure",
            "lies before the procedure; a pre-procedure score travels in the Procedure's "
            f"{codes.Ext.PRE_VAS.value} extension",
        )
    recorded = scope.recorded_at(obs, obs.issued, "Observation.issued")
    payload = scope.envelope(
        EVENT_TYPE,
        identity,
        patient=patient,
        procedure=procedure,
        occurred_at=effective,
        recorded_at=recorded,
    )
    payload |= {
        "timepoint": codes.timepoint_for(days).value,
        "days_since_procedure": days,
        "vas": vas,
    }
    return payload


def _pain_score(obs: Observation) -> float:
    if obs.valueInteger is not None:
        return float(obs.valueInteger)
    quantity = obs.valueQuantity
    if quantity is not None and quantity.value is not None:
        unit_ok = quantity.code in (None, codes.SCORE_UNIT) and quantity.system in (
            None,
            codes.UCUM,
        )
        if unit_ok:
            return float(quantity.value)
        raise unmappable(
            "Observation.valueQuantity",
            "wrong_unit",
            f"a 0-10 score has no unit, or UCUM {codes.SCORE_UNIT}; other scales are not converted",
        )
    raise unmappable(
        "Observation.value[x]",
        "missing_value",
        "needs valueInteger or valueQuantity (0-10); a dataAbsentReason records no score",
    )


def _effective(obs: Observation) -> datetime:
    if obs.effectiveDateTime is not None:
        return clinical_time(obs.effectiveDateTime, "Observation.effectiveDateTime")
    if obs.effectiveInstant is not None:
        return clinical_time(obs.effectiveInstant, "Observation.effectiveInstant")
    if obs.effectivePeriod is not None and obs.effectivePeriod.start is not None:
        return clinical_time(obs.effectivePeriod.start, "Observation.effectivePeriod.start")
    raise unmappable(
        "Observation.effective[x]",
        "missing_time",
        "needs effectiveDateTime, effectiveInstant or effectivePeriod.start",
    )


def _effective_or(obs: Observation, fallback: datetime) -> datetime:
    try:
        return _effective(obs)
    except InvalidEvent:
        return fallback
