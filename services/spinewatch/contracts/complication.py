"""`complication.reported`: an adverse event after a procedure."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, ValidationInfo, field_validator

from spinewatch.contracts.base import DaysSinceProcedure
from spinewatch.contracts.envelope import EventEnvelope, event_schema_rules
from spinewatch.contracts.schema_rules import is_value, when
from spinewatch.contracts.vocabulary import (
    ComplicationCategory,
    Relatedness,
    Severity,
    Vertebra,
)


class ComplicationReported(EventEnvelope):
    # Mirrors _death_is_fatal: fatal if and only if death.
    model_config = ConfigDict(
        json_schema_extra=event_schema_rules(
            when(
                is_value("category", ComplicationCategory.DEATH),
                {"properties": {"severity": {"const": Severity.FATAL.value}}},
                {"properties": {"severity": {"not": {"const": Severity.FATAL.value}}}},
            )
        )
    )

    event_type: Literal["complication.reported"]
    category: ComplicationCategory
    severity: Severity
    relatedness: Relatedness
    days_after_procedure: DaysSinceProcedure
    vertebra: Vertebra | None = None  # level concerned, e.g. a new adjacent fracture

    @field_validator("severity")
    @classmethod
    def _death_is_fatal(cls, severity: Severity, info: ValidationInfo) -> Severity:
        category = info.data.get("category")
        if category is not None and (category is ComplicationCategory.DEATH) != (
            severity is Severity.FATAL
        ):
            raise ValueError("severity fatal goes with category death, and only with it")
        return severity
