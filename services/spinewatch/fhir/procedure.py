"""Procedure -> `procedure.performed` (or `event.retracted` when entered in error).

What the contract requires and FHIR has no element for (anesthesia,
neurological deficit, biopsy; per level approach, cement volume, leakage
imaging for PVP/PKP) comes from spinewatch extensions; a missing one is a
reject naming the extension, never a default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Final

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.procedure import Procedure

from spinewatch.contracts.vocabulary import (
    Anesthesia,
    Approach,
    Histology,
    LeakageImaging,
    LeakageSite,
    ProcedureType,
)
from spinewatch.errors import InvalidEvent
from spinewatch.fhir import codes
from spinewatch.fhir.codes import Ext
from spinewatch.fhir.elements import (
    Problems,
    bool_extension,
    clinical_time,
    code_extension,
    concept_values,
    extensions,
    millilitres,
    millilitres_extension,
    missing_extension,
    number_extension,
    one_value,
    reject_modifier_extensions,
    single_extension,
    unmappable,
)
from spinewatch.fhir.references import Entry
from spinewatch.fhir.scope import Scope, entry_identity, subject_identity
from spinewatch.fhir.validation import validate

EVENT_TYPE: Final = "procedure.performed"
OPERATOR_CODE: Final = re.compile(r"op-[a-z0-9]{3,24}")  # contracts.base.OperatorRef
_AUGMENTATION_EXTENSIONS: Final = (Ext.APPROACH, Ext.CEMENT_VOLUME, Ext.LEAKAGE_IMAGING)


@dataclass(frozen=True)
class MappedProcedure:
    payload: dict[str, Any]
    identity: str
    patient: str
    performed: datetime | None  # None for a retraction


def map_procedure(scope: Scope, entry: Entry, proc: Procedure) -> MappedProcedure:
    reject_modifier_extensions(proc, "Procedure")
    identity = entry_identity(entry, "Procedure")
    patient = subject_identity(scope.document, proc.subject, "Procedure.subject")
    if proc.status == "entered-in-error":
        return _retraction(scope, proc, identity, patient)
    if proc.status != "completed":
        raise unmappable(
            "Procedure.status",
            "status_not_completed",
            "must be completed (or entered-in-error, which retracts); a procedure that did "
            "not happen, or has not ended, has no outcome to follow",
        )
    if proc.complication or proc.complicationDetail:
        raise unmappable(
            "Procedure.complication",
            "complication_not_mapped",
            "cannot be mapped without guessing severity, relatedness and onset: send each "
            "complication as an AdverseEvent whose suspectEntity is this Procedure",
        )
    problems = Problems()
    fields: dict[str, Any] = {}

    def put(name: str, value: object) -> None:
        if value is not None:
            fields[name] = value

    procedure_type = problems.check(partial(_procedure_type, proc.code))
    put("procedure_type", procedure_type)
    performed = problems.check(partial(_performed, proc))
    put("levels", problems.check(partial(_levels, proc, procedure_type)))
    put("indication", problems.check(partial(_indication, scope, proc, patient)))
    loc = "Procedure"
    anesthesia = partial(code_extension, proc, Ext.ANESTHESIA, loc, _values(Anesthesia), True)
    put("anesthesia", problems.check(anesthesia))
    deficit = partial(bool_extension, proc, Ext.NEUROLOGICAL_DEFICIT, loc, True)
    put("neurological_deficit_at_presentation", problems.check(deficit))
    put("biopsy_taken", problems.check(partial(bool_extension, proc, Ext.BIOPSY_TAKEN, loc, True)))
    put("pre_vas", problems.check(partial(number_extension, proc, Ext.PRE_VAS, loc)))
    histology = partial(code_extension, proc, Ext.HISTOLOGY, loc, _values(Histology), False)
    put("histology", problems.check(histology))
    wall = partial(bool_extension, proc, Ext.POSTERIOR_WALL_INTACT, loc, False)
    put("posterior_wall_intact", problems.check(wall))
    put("operator_ref", _operator(proc))
    recorded = problems.check(partial(scope.recorded_at, proc))
    problems.raise_any()
    # Both were read without error to get here; the fallbacks only narrow the types.
    start, duration = performed or _performed(proc)
    put("duration_min", duration)
    payload = scope.envelope(
        EVENT_TYPE,
        identity,
        patient=patient,
        procedure=identity,
        occurred_at=start,
        recorded_at=recorded or scope.recorded_at(proc),
    )
    payload |= fields
    return MappedProcedure(payload, identity, patient, start)


def _retraction(scope: Scope, proc: Procedure, identity: str, patient: str) -> MappedProcedure:
    # The clinical time if it is still readable, else the record time.
    recorded = scope.recorded_at(proc)
    occurred = recorded
    start = proc.performedDateTime or (proc.performedPeriod.start if proc.performedPeriod else None)
    if start is not None:
        try:
            occurred = clinical_time(start, "Procedure.performed[x]")
        except InvalidEvent:
            occurred = recorded
    payload = scope.retraction(
        EVENT_TYPE,
        identity,
        patient=patient,
        procedure=identity,
        occurred_at=occurred,
        recorded_at=recorded,
    )
    return MappedProcedure(payload, identity, patient, None)


def _values(vocabulary: type[Anesthesia | Approach | Histology | LeakageImaging]) -> list[str]:
    return [member.value for member in vocabulary]


def _procedure_type(code: CodeableConcept | None) -> str:
    def resolve(system: str, value: str) -> str | None:
        if system == codes.CPT:
            found = codes.CPT_PROCEDURES.get(value)
            return found.value if found else None
        return (
            codes.spinewatch_value(codes.SW_PROCEDURE_TYPE, value)
            if (system == codes.SW_PROCEDURE_TYPE)
            else None
        )

    return one_value(
        concept_values(code, resolve),
        "Procedure.code",
        "procedure (CPT 22510-22515, or urn:spinewatch:fhir:codesystem:procedure-type)",
    )


def _performed(proc: Procedure) -> tuple[datetime, int | None]:
    """Start, and duration in minutes when a period gives both ends with times."""
    if proc.performedDateTime is not None:
        return clinical_time(proc.performedDateTime, "Procedure.performedDateTime"), None
    period = proc.performedPeriod
    if period is None or period.start is None:
        raise unmappable(
            "Procedure.performed[x]",
            "missing_time",
            "needs performedDateTime or performedPeriod.start (a full date at least)",
        )
    start = clinical_time(period.start, "Procedure.performedPeriod.start")
    raw_start, raw_end = period.start, period.end
    if not (isinstance(raw_start, datetime) and isinstance(raw_end, datetime)):
        return start, None  # a date has no time of day: no duration to state
    minutes = round((raw_end - raw_start).total_seconds() / 60)
    if minutes < 0:
        raise unmappable("Procedure.performedPeriod", "period_reversed", "ends before it starts")
    # A zero-length period states a moment, not a duration.
    return start, minutes or None


def _vertebra(system: str, code: str) -> str | None:
    if system == codes.SNOMED_CT:
        found = codes.SNOMED_VERTEBRAE.get(code)
        return found.value if found else None
    if system == codes.SW_VERTEBRA:
        return codes.spinewatch_value(system, code)
    return None


def vertebra_of(coding: Coding | None, location: str) -> str:
    """The vertebra a single Coding names (the AdverseEvent's vertebra extension)."""
    found = (
        _vertebra(coding.system, coding.code) if coding and coding.system and coding.code else None
    )
    if found is None:
        raise unmappable(
            location,
            "unmapped_code",
            f"{Ext.VERTEBRA.value} needs valueCoding naming a {codes.VERTEBRA_CODES}",
        )
    return found


def _levels(proc: Procedure, procedure_type: str | None) -> list[dict[str, Any]]:
    sites = proc.bodySite or []
    if not sites:
        raise unmappable("Procedure.bodySite", "missing_levels", "needs one bodySite per vertebra")
    augmentation = (
        procedure_type is not None and ProcedureType(procedure_type).is_vertebral_augmentation
    )
    problems = Problems()
    levels = [problems.check(partial(_level, s, i, augmentation)) for i, s in enumerate(sites)]
    problems.raise_any()
    return [level for level in levels if level is not None]


def _level(site: CodeableConcept, index: int, augmentation: bool) -> dict[str, Any]:
    loc = f"Procedure.bodySite[{index}]"
    problems = Problems()
    vertebra = problems.check(
        partial(
            one_value,
            concept_values(site, _vertebra),
            loc,
            codes.VERTEBRA_CODES,
        )
    )
    if augmentation:
        for url in _AUGMENTATION_EXTENSIONS:
            if not extensions(site, url):
                problems.errors.extend(missing_extension(loc, url).errors)
    level: dict[str, Any] = {
        "vertebra": vertebra,
        "approach": problems.check(
            partial(code_extension, site, Ext.APPROACH, loc, _values(Approach), False)
        ),
        "cement_volume_ml": problems.check(
            partial(millilitres_extension, site, Ext.CEMENT_VOLUME, loc)
        ),
        "leakage_imaging": problems.check(
            partial(code_extension, site, Ext.LEAKAGE_IMAGING, loc, _values(LeakageImaging), False)
        ),
    }
    leaks = extensions(site, Ext.CEMENT_LEAKAGE)
    if leaks:
        level["leakages"] = [
            problems.check(partial(_leakage, leak, f"{loc}.extension({Ext.CEMENT_LEAKAGE})[{j}]"))
            for j, leak in enumerate(leaks)
        ]
    problems.raise_any()
    return {name: value for name, value in level.items() if value is not None}


def _leakage(ext: Extension, loc: str) -> dict[str, Any]:
    """One cement leakage: complex extension with site, symptomatic and optional volume."""
    sites = [site.value for site in LeakageSite]
    leakage: dict[str, Any] = {
        "site": code_extension(ext, codes.LEAKAGE_SITE, loc, sites, True),
        "symptomatic": bool_extension(ext, codes.LEAKAGE_SYMPTOMATIC, loc, True),
    }
    volume = single_extension(ext, codes.LEAKAGE_VOLUME, loc)
    if volume is not None:
        leakage["volume_ml"] = millilitres(volume.valueQuantity, loc, codes.LEAKAGE_VOLUME)
    return leakage


def _standard_indication(system: str, code: str) -> str | None:
    if system == codes.ICD10_CM:
        for pattern, indication in codes.ICD10_CM_INDICATIONS:
            if pattern.fullmatch(code):
                return indication.value
    return None


def _explicit_indication(system: str, code: str) -> str | None:
    return codes.spinewatch_value(system, code) if system == codes.SW_INDICATION else None


def _indication(scope: Scope, proc: Procedure, patient: str) -> str:
    """One indication from reasonCode and the Conditions of reasonReference.

    A spinewatch indication code, where given, is the sender's explicit
    choice and wins; otherwise the standard codes must agree on one.
    """
    concepts: list[CodeableConcept | None] = list(proc.reasonCode or [])
    for i, reference in enumerate(proc.reasonReference or []):
        loc = f"Procedure.reasonReference[{i}]"
        condition = _condition(scope, reference.reference)
        if condition is None:
            continue
        about = subject_identity(scope.document, condition.subject, f"{loc} Condition.subject")
        if about != patient:
            raise unmappable(loc, "subject_mismatch", "names a Condition of another patient")
        concepts.append(condition.code)
    explicit: set[str] = set()
    standard: set[str] = set()
    for concept in concepts:
        explicit |= concept_values(concept, _explicit_indication)
        standard |= concept_values(concept, _standard_indication)
    return one_value(
        explicit or standard,
        "Procedure.reasonCode",
        "indication (ICD-10-CM codes of schemas/fhir/README.md, or "
        "urn:spinewatch:fhir:codesystem:indication; a reasonReference must name a Condition "
        "of the same Bundle)",
    )


def _condition(scope: Scope, reference: str | None) -> Condition | None:
    """The Condition of this document a reason points at, if it is one and not denied."""
    resolved = scope.document.resolve(reference) if reference else None
    entry = scope.document.entry_for(resolved[1]) if resolved else None
    if entry is None or entry.resource_type != "Condition" or entry.resource is None:
        return None
    condition = validate(Condition, entry.resource)
    status = condition.verificationStatus
    if concept_values(
        status,
        lambda s, c: (
            c if s == codes.CONDITION_VERIFICATION and c in codes.DENIED_CONDITIONS else None
        ),
    ):
        return None
    return condition


def _operator(proc: Procedure) -> str | None:
    """A performer's identifier that already is a pseudonymous operator code, if exactly one.

    Anything else about a performer (a Practitioner reference, a name) is
    never forwarded.
    """
    found = {
        performer.actor.identifier.value
        for performer in proc.performer or []
        if performer.actor is not None
        and performer.actor.identifier is not None
        and performer.actor.identifier.value is not None
        and OPERATOR_CODE.fullmatch(performer.actor.identifier.value)
    }
    return found.pop() if len(found) == 1 else None
