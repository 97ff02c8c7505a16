"""`spinewatch demo`: what the foundation can show on its own.

The stream engine is not built yet (it is the next milestone). Until then
the demo pushes a small batch of events through the contracts, as raw bytes
exactly as the engine will receive them (one valid event of each type, a
redelivered duplicate and a malformed message), and prints the literature
baselines that PVP for hemangioma will be compared against.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import TextIO

from spinewatch.baselines import comparators, load_catalog
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
    parse_event,
)
from spinewatch.errors import InvalidEvent

DEMO_METRICS = (
    "vas_score",
    "cement_leakage_rate",
    "symptomatic_cement_leakage_rate",
    "pulmonary_cement_embolism_rate",
    "complication_rate",
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


def run_demo(out: TextIO | None = None) -> int:
    out = out or sys.stdout
    print(
        "spinewatch demo: contracts and baselines (the stream engine is the next milestone)\n",
        file=out,
    )
    seen: set[uuid.UUID] = set()
    for raw in sample_messages():
        try:
            event = parse_event(raw)
        except InvalidEvent as exc:
            print(f"  dead-letter  {len(raw)} bytes: {exc}", file=out)
            continue
        verdict = "duplicate (ignored)" if event.event_id in seen else "accepted"
        seen.add(event.event_id)
        print(f"  {verdict:<20} {event.event_type:<22} event_id={event.event_id}", file=out)

    catalog = load_catalog()
    print(f"\nBaselines for PVP / hemangioma (catalog {catalog.catalog_version}):", file=out)
    for metric in DEMO_METRICS:
        found = comparators(catalog, metric, "pvp", "hemangioma")
        # Preferred comparators (one per timepoint), else the best available.
        for entry in [e for e in found if e.preferred] or found[:1]:
            label = metric + (f" @ {entry.timepoint}" if entry.timepoint else "")
            print(
                f"  {label:<48} {entry.statistic.describe():<18} "
                f"{entry.source.seed} {entry.source.locator}",
                file=out,
            )
    return 0
