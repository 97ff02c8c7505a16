"""AdverseEvent -> `complication.reported`.

R4's AdverseEvent has no status, so it cannot be marked entered-in-error:
a complication sent by mistake is retracted with a native `event.retracted`
(schemas/fhir/README.md).
"""

from __future__ import annotations

from typing import Any, Final

from fhir.resources.R4B.adverseevent import AdverseEvent

from spinewatch.contracts.vocabulary import ComplicationCategory, Severity
from spinewatch.fhir import codes
from spinewatch.fhir.codes import Ext
from spinewatch.fhir.elements import (
    clinical_time,
    concept_values,
    days_between,
    has_coding,
    one_value,
    reject_modifier_extensions,
    single_extension,
    unmappable,
)
from spinewatch.fhir.followup import the_procedure
from spinewatch.fhir.procedure import vertebra_of
from spinewatch.fhir.references import Entry
from spinewatch.fhir.scope import Scope, entry_identity, subject_identity

EVENT_TYPE: Final = "complication.reported"


def map_adverse_event(scope: Scope, entry: Entry, event: AdverseEvent) -> dict[str, Any]:
    reject_modifier_extensions(event, "AdverseEvent")
    identity = entry_identity(entry, "AdverseEvent")
    patient = subject_identity(scope.document, event.subject, "AdverseEvent.subject")
    if event.actuality != "actual":
        raise unmappable(
            "AdverseEvent.actuality",
            "not_actual",
            "must be actual; a potential event (near miss) is no complication",
        )
    procedure = the_procedure(scope, entry, "AdverseEvent", "suspectEntity")
    category = one_value(
        concept_values(event.event, _category),
        "AdverseEvent.event",
        "complication category (urn:spinewatch:fhir:codesystem:complication-category)",
    )
    # The contract: severity fatal goes with category death, and only with
    # it. A fatal outcome therefore makes the complication a death.
    if _is_fatal(event) or category == ComplicationCategory.DEATH.value:
        category, severity = ComplicationCategory.DEATH.value, Severity.FATAL.value
    elif has_coding(event.seriousness, codes.AE_SERIOUSNESS, codes.LIFE_THREATENING):
        severity = Severity.LIFE_THREATENING.value
    else:
        severity = one_value(
            concept_values(event.severity, _severity),
            "AdverseEvent.severity",
            f"severity ({codes.AE_SEVERITY}: mild, moderate, severe; life-threatening by "
            f"seriousness {codes.LIFE_THREATENING}; fatal by outcome fatal)",
        )
    relatedness = _relatedness(scope, event, procedure)
    if event.date is None:
        raise unmappable(
            "AdverseEvent.date", "missing_time", "the date the complication occurred is required"
        )
    occurred = clinical_time(event.date, "AdverseEvent.date")
    performed = scope.placement(
        procedure, patient, "AdverseEvent.suspectEntity", "AdverseEvent.subject"
    )
    days = days_between(performed, occurred)
    if days < 0:
        raise unmappable("AdverseEvent.date", "before_procedure", "lies before the procedure")
    recorded = scope.recorded_at(event, event.recordedDate, "AdverseEvent.recordedDate")
    payload = scope.envelope(
        EVENT_TYPE,
        identity,
        patient=patient,
        procedure=procedure,
        occurred_at=occurred,
        recorded_at=recorded,
    )
    payload |= {
        "category": category,
        "severity": severity,
        "relatedness": relatedness,
        "days_after_procedure": days,
    }
    vertebra = single_extension(event, Ext.VERTEBRA, "AdverseEvent")
    if vertebra is not None:
        payload["vertebra"] = vertebra_of(vertebra.valueCoding, "AdverseEvent.extension")
    return payload


def _category(system: str, code: str) -> str | None:
    return codes.spinewatch_value(system, code) if system == codes.SW_COMPLICATION else None


def _severity(system: str, code: str) -> str | None:
    if system == codes.AE_SEVERITY:
        found = codes.AE_SEVERITIES.get(code)
        return found.value if found else None
    return codes.spinewatch_value(system, code) if system == codes.SW_SEVERITY else None


def _is_fatal(event: AdverseEvent) -> bool:
    return has_coding(event.outcome, codes.AE_OUTCOME, codes.FATAL_OUTCOME) or has_coding(
        event.seriousness, codes.AE_SERIOUSNESS, codes.RESULTS_IN_DEATH
    )


def _relatedness(scope: Scope, event: AdverseEvent, procedure: str) -> str:
    """The causality assessment of the suspect entity that is the procedure."""

    def resolve(system: str, code: str) -> str | None:
        if system == codes.AE_CAUSALITY:
            found = codes.AE_CAUSALITIES.get(code)
            return found.value if found else None
        return codes.spinewatch_value(system, code) if system == codes.SW_RELATEDNESS else None

    found: set[str] = set()
    for suspect in event.suspectEntity or []:
        reference = suspect.instance.reference if suspect.instance else None
        resolved = scope.document.resolve(reference) if reference else None
        if resolved == ("Procedure", procedure):
            for causality in suspect.causality or []:
                found |= concept_values(causality.assessment, resolve)
    return one_value(
        found,
        "AdverseEvent.suspectEntity.causality.assessment",
        f"relatedness ({codes.AE_CAUSALITY}: Certain, Probably-Likely, Possible, Unlikely; or "
        "urn:spinewatch:fhir:codesystem:relatedness)",
    )
