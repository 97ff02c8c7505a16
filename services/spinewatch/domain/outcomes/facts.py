"""Facts: the few fields of each event that the outcome metrics read.

A validated event is reduced to a small frozen fact as soon as it is parsed.
Procedure state holds facts, not pydantic events: they are a tenth of the
size, cost microseconds to serialise into a changelog, and make the
contribution of a procedure a short loop over plain values. The reduction
is lossless for every metric spinewatch computes; the original event stays
in the source topic for audit and replay.

Facts are msgspec structs encoded as tagged arrays: a fact batch or a
changelog segment is (de)serialised by msgspec in C, with no per-field
Python, which is what lets the bulk path beat a per-event state store.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from spinewatch.contracts import (
    ComplicationReported,
    Event,
    EventRetracted,
    FollowupRecorded,
    LeakageImaging,
    LeakageSite,
    ProcedurePerformed,
    ProcedureType,
)

VAS_SCALE = 1000  # VAS is held in thousandths of a point, so sums stay integers

LEVELS_TREATED = "levels_treated"
LEVELS_ASSESSED_FOR_LEAKAGE = "levels_assessed_for_leakage"
LEVELS_WITH_LEAKAGE = "levels_with_leakage"
PATIENTS_ASSESSED_FOR_LEAKAGE = "patients_assessed_for_leakage"
PATIENTS_WITH_LEAKAGE = "patients_with_leakage"
PVP_ALONE_WITH_NEURO_DEFICIT = "pvp_alone_with_neurological_deficit"
SUSPECTED_TUMOUR_PROCEDURES = "suspected_tumour_procedures"
SUSPECTED_TUMOUR_WITHOUT_BIOPSY = "suspected_tumour_without_biopsy"
# Kept only for the treatments whose neurological outcome is tracked (seeds
# 002/004): the seeds' figures count patients who presented with a deficit.
NEURO_DEFICIT_AT_PRESENTATION = "neurological_deficit_at_presentation"
NEURO_OUTCOME_PROCEDURES = frozenset(
    {
        ProcedureType.TRANSARTERIAL_EMBOLIZATION,
        ProcedureType.DECOMPRESSION_LAMINECTOMY,
        ProcedureType.RADIOTHERAPY,
    }
)


def levels_with_leakage_at(site: str) -> str:
    return f"{LEVELS_WITH_LEAKAGE}.{site}"


def levels_assessed_with(imaging: str) -> str:
    """Levels checked for leakage on one modality (fluoroscopy, radiograph, CT)."""
    return f"{LEVELS_ASSESSED_FOR_LEAKAGE}.{imaging}"


def levels_leaking_on(imaging: str) -> str:
    """Levels with leakage seen on one modality: a series counts like with like."""
    return f"{LEVELS_WITH_LEAKAGE}_on.{imaging}"


# Event ids are the UUID's 16 bytes: less than half the memory of the text
# form, no formatting cost per event, and the same order as the text form.
EventId = bytes


class ProcedureFact(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=0):
    event_id: EventId
    recorded_at_us: int  # epoch microseconds: orders corrected versions
    occurred_at_us: int  # clinical time: orders cases on the drift charts
    site_id: str
    procedure_type: str
    indication: str
    operator_ref: str | None
    # Tallies fixed by the procedure itself (leakage per level, pitfalls).
    intrinsic: tuple[tuple[str, int], ...]
    symptomatic_leak: bool
    pre_vas: int | None  # thousandths


class FollowupFact(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=1):
    event_id: EventId
    recorded_at_us: int
    timepoint: str
    vas: int | None  # thousandths
    analgesic_use: str | None
    # Follow-up schema version 2 (seeds 002/004 outcomes). Trailing fields
    # with defaults: a fact written before they existed still decodes.
    days_since_procedure: int | None = None
    neurological_status: str | None = None
    pain_relief: str | None = None


class ComplicationFact(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=2):
    event_id: EventId
    category: str
    procedure_related: bool


class RetractionFact(msgspec.Struct, frozen=True, array_like=True, gc=False, tag=3):
    event_id: EventId
    target_event_id: EventId


Fact = ProcedureFact | FollowupFact | ComplicationFact | RetractionFact


def fact_of(event: Event) -> Fact:
    """Reduce a validated event to what the metrics need.

    Runs once per inbound event, so it avoids generators and repeated
    attribute walks: on the bulk path it costs as much as the validation.
    """
    event_id = event.event_id.bytes
    match event:
        case FollowupRecorded():
            return FollowupFact(
                event_id,
                _micros(event.recorded_at),
                event.timepoint.value,
                None if event.vas is None else round(event.vas * VAS_SCALE),
                None if event.analgesic_use is None else event.analgesic_use.value,
                event.days_since_procedure,
                None if event.neurological_status is None else event.neurological_status.value,
                None if event.pain_relief is None else event.pain_relief.value,
            )
        case ProcedurePerformed():
            intrinsic, symptomatic = _intrinsic_tallies(event)
            return ProcedureFact(
                event_id,
                _micros(event.recorded_at),
                _micros(event.occurred_at),
                event.site_id,
                event.procedure_type.value,
                event.indication.value,
                event.operator_ref,
                intrinsic,
                symptomatic,
                None if event.pre_vas is None else round(event.pre_vas * VAS_SCALE),
            )
        case ComplicationReported():
            return ComplicationFact(
                event_id, event.category.value, event.relatedness.counts_as_procedure_related
            )
        case EventRetracted():
            return RetractionFact(event_id, event.target_event_id.bytes)
    raise AssertionError(f"unhandled event type {type(event).__name__}")  # pragma: no cover


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros(moment: datetime) -> int:
    # Exact integer arithmetic: a float timestamp would round some instants.
    return (moment - _EPOCH) // _MICROSECOND


def _intrinsic_tallies(
    procedure: ProcedurePerformed,
) -> tuple[tuple[tuple[str, int], ...], bool]:
    """Tallies fixed by the procedure itself, and whether any leak was symptomatic."""
    tallies: list[tuple[str, int]] = [(LEVELS_TREATED, len(procedure.levels))]
    # A level whose leakage was not checked on imaging stays out of every
    # leakage denominator, rather than counting as "no leak".
    assessed = leaked = 0
    symptomatic = False
    by_site: dict[str, int] = {}
    # Per modality too: CT finds more leaks than fluoroscopy, so a rate is
    # only compared with a series that counted on the same imaging.
    by_imaging: dict[str, int] = {}
    for level in procedure.levels:
        imaging = level.leakage_imaging
        if imaging is None or imaging is LeakageImaging.NOT_ASSESSED:
            continue
        assessed += 1
        seen, found = _IMAGING_TALLIES[imaging]
        by_imaging[seen] = by_imaging.get(seen, 0) + 1
        by_imaging[found] = by_imaging.get(found, 0) + bool(level.leakages)
        if level.leakages:
            leaked += 1
            for leak in level.leakages:
                name = _LEAKAGE_SITE_TALLY[leak.site]
                by_site[name] = by_site.get(name, 0) + 1
                symptomatic = symptomatic or leak.symptomatic
    if assessed:
        tallies.append((LEVELS_ASSESSED_FOR_LEAKAGE, assessed))
        tallies.append((LEVELS_WITH_LEAKAGE, leaked))
        tallies.extend(sorted(by_site.items()))
        tallies.extend(sorted(by_imaging.items()))
        tallies.append((PATIENTS_ASSESSED_FOR_LEAKAGE, 1))
        tallies.append((PATIENTS_WITH_LEAKAGE, int(leaked > 0)))
    # Pitfalls the seeds name, each with an expected rate of zero. Seeds
    # 002/004: do not rely on vertebroplasty alone for a neurological deficit.
    # Seed 003: biopsy before VP is determinant when a tumour is suspected.
    if procedure.procedure_type is ProcedureType.PVP:
        tallies.append(
            (PVP_ALONE_WITH_NEURO_DEFICIT, int(procedure.neurological_deficit_at_presentation))
        )
    if procedure.procedure_type in NEURO_OUTCOME_PROCEDURES:
        tallies.append(
            (NEURO_DEFICIT_AT_PRESENTATION, int(procedure.neurological_deficit_at_presentation))
        )
    if procedure.indication.is_suspected_tumour:
        tallies.append((SUSPECTED_TUMOUR_PROCEDURES, 1))
        tallies.append((SUSPECTED_TUMOUR_WITHOUT_BIOPSY, int(not procedure.biopsy_taken)))
    return tuple(tallies), symptomatic


_LEAKAGE_SITE_TALLY = {site: levels_with_leakage_at(site.value) for site in LeakageSite}
_IMAGING_TALLIES = {
    imaging: (levels_assessed_with(imaging.value), levels_leaking_on(imaging.value))
    for imaging in LeakageImaging
    if imaging is not LeakageImaging.NOT_ASSESSED
}
