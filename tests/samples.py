"""A small hand-written pathway of events, and two defects, as raw bytes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from spinewatch.contracts import (
    Anesthesia,
    Approach,
    CementLeakage,
    ComplicationCategory,
    ComplicationReported,
    EventRetracted,
    FollowupRecorded,
    FollowupTimepoint,
    Indication,
    LeakageImaging,
    LeakageSite,
    ProcedurePerformed,
    ProcedureType,
    Relatedness,
    RetractionReason,
    Severity,
    TreatedLevel,
    Vertebra,
)


def sample_messages() -> list[bytes]:
    """Kafka message values for one patient's pathway, plus two defects."""
    when = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    common = {
        "schema_version": 1,
        "source": "ris-demo",
        "site_id": "demo-north",
        "patient_ref": uuid.UUID(int=1),
        "procedure_id": uuid.UUID(int=2),
    }
    procedure = ProcedurePerformed(
        event_id=uuid.UUID(int=10),
        event_type="procedure.performed",
        occurred_at=when,
        recorded_at=when + timedelta(hours=2),
        procedure_type=ProcedureType.PVP,
        indication=Indication.HEMANGIOMA,
        levels=(
            TreatedLevel(
                vertebra=Vertebra.L4,
                approach=Approach.UNIPEDICULAR,
                cement_volume_ml=5.5,
                leakage_imaging=LeakageImaging.CT,
                leakages=(CementLeakage(site=LeakageSite.FORAMINAL, symptomatic=True),),
            ),
        ),
        anesthesia=Anesthesia.LOCAL,
        pre_vas=7.5,
        neurological_deficit_at_presentation=False,
        biopsy_taken=True,
        **common,
    )
    followup = FollowupRecorded(
        event_id=uuid.UUID(int=11),
        event_type="followup.recorded",
        occurred_at=when + timedelta(days=2),
        recorded_at=when + timedelta(days=2),
        timepoint=FollowupTimepoint.POST_PROCEDURE,
        vas=1.5,
        **common,
    )
    complication = ComplicationReported(
        event_id=uuid.UUID(int=12),
        event_type="complication.reported",
        occurred_at=when,
        recorded_at=when + timedelta(hours=3),
        category=ComplicationCategory.RADICULOPATHY,
        severity=Severity.MILD,
        relatedness=Relatedness.DEFINITE,
        days_after_procedure=0,
        vertebra=Vertebra.L4,
        **common,
    )
    retraction = EventRetracted(
        event_id=uuid.UUID(int=13),
        event_type="event.retracted",
        occurred_at=when + timedelta(days=3),
        recorded_at=when + timedelta(days=3),
        target_event_id=followup.event_id,
        reason=RetractionReason.ENTERED_IN_ERROR,
        **common,
    )
    valid = [e.model_dump_json().encode() for e in (procedure, followup, complication, retraction)]
    malformed = valid[1].replace(b'"vas":1.5', b'"vas":"1.5"').replace(b"post_procedure", b"week_9")
    return [*valid, valid[1], malformed]
