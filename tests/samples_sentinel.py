"""One procedure with a pulmonary cement embolism, its retraction and re-reports, as events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from spinewatch.contracts import (
    Anesthesia,
    Approach,
    ComplicationCategory,
    ComplicationReported,
    EventRetracted,
    Indication,
    LeakageImaging,
    ProcedurePerformed,
    ProcedureType,
    Relatedness,
    RetractionReason,
    Severity,
    TreatedLevel,
    Vertebra,
)

WHEN = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


class Pathway:
    """Events of one procedure at one site; each call makes a new event id."""

    def __init__(self, site_id: str, procedure: int) -> None:
        self.common: dict[str, Any] = {
            "schema_version": 1,
            "source": "ris-test",
            "site_id": site_id,
            "patient_ref": uuid.uuid4(),
            "procedure_id": uuid.uuid4(),
        }
        self.day = WHEN + timedelta(days=procedure)
        self._hours = 0

    def _next(self) -> datetime:
        self._hours += 1
        return self.day + timedelta(hours=self._hours)

    def procedure(self, site_id: str | None = None) -> ProcedurePerformed:
        common = self.common | ({"site_id": site_id} if site_id else {})
        return ProcedurePerformed(
            event_id=uuid.uuid4(), event_type="procedure.performed", occurred_at=self.day,
            recorded_at=self._next(), procedure_type=ProcedureType.PVP,
            indication=Indication.OSTEOPOROTIC,
            levels=(TreatedLevel(vertebra=Vertebra.L1, approach=Approach.BIPEDICULAR,
                                 cement_volume_ml=4.0, leakage_imaging=LeakageImaging.CT),),
            anesthesia=Anesthesia.LOCAL, pre_vas=8.0,
            neurological_deficit_at_presentation=False, biopsy_taken=False, **common,
        )  # fmt: skip

    def embolism(self) -> ComplicationReported:
        return ComplicationReported(
            event_id=uuid.uuid4(), event_type="complication.reported", occurred_at=self.day,
            recorded_at=self._next(), category=ComplicationCategory.PULMONARY_CEMENT_EMBOLISM,
            severity=Severity.SEVERE, relatedness=Relatedness.DEFINITE,
            days_after_procedure=0, **self.common,
        )  # fmt: skip

    def retraction(self, target: uuid.UUID) -> EventRetracted:
        return EventRetracted(
            event_id=uuid.uuid4(), event_type="event.retracted", occurred_at=self._next(),
            recorded_at=self._next(), target_event_id=target,
            reason=RetractionReason.ENTERED_IN_ERROR, **self.common,
        )  # fmt: skip
