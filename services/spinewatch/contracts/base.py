"""Shared building blocks of the event contracts: model config, identifiers, measures.

Privacy by construction: patients and procedures are referenced only by
UUIDs issued by the sender's pseudonymisation service. A UUID cannot carry a
name, a medical record number or a birth date, so none can be sent by
accident; every model also forbids unknown fields, so a stray `patient_name`
is rejected rather than carried along.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

# One config for every contract: immutable, no coercion of types (a VAS of
# "7" is an error, not 7), unknown fields rejected.
CONTRACT_CONFIG = ConfigDict(
    frozen=True,
    strict=True,
    extra="forbid",
    str_strip_whitespace=False,
    use_enum_values=False,
    validate_default=True,
)


class Contract(BaseModel):
    """Base of every model that travels on the wire."""

    model_config = CONTRACT_CONFIG


SiteId = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,31}$"),
    Field(description="Treating site, a short lowercase slug (bounded metric label)."),
]
SourceSystem = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$"),
    Field(description="Emitting system, e.g. 'ris-north.v3'."),
]
OperatorRef = Annotated[
    str,
    StringConstraints(pattern=r"^op-[a-z0-9]{3,24}$"),
    Field(description="Pseudonymous operator code issued by the site, e.g. 'op-7f3k2'."),
]
VasScore = Annotated[
    float,
    Field(ge=0, le=10, description="Visual analogue scale for pain, 0 (none) to 10 (worst)."),
]
DaysSinceProcedure = Annotated[int, Field(ge=0, le=36500)]

# Clinical time lies in [CLINICAL_EPOCH, CLINICAL_HORIZON), compared in UTC.
# The lower bound is the first vertebroplasty in the literature, seed 003
# lines 14-16: "The first case of VP reported in literature was performed
# by Deramond in France in 1984"; an earlier date is a data error. The
# upper bound is technical: date arithmetic over the longest follow-up a
# contract allows (DaysSinceProcedure, 100 years) must stay inside Python's
# datetime, which ends in year 9999 (a test checks the margin). Without a
# bound, 9999-12-31T23:59:59-23:59 passed the contract and the engine's
# clinical_date() then raised "year 10000 is out of range".
CLINICAL_EPOCH = datetime(1984, 1, 1, tzinfo=UTC)
CLINICAL_HORIZON = datetime(2100, 1, 1, tzinfo=UTC)
CLINICAL_RANGE = "[1984-01-01T00:00:00Z, 2100-01-01T00:00:00Z), compared in UTC"
CLINICAL_DATE_OUT_OF_RANGE = "clinical_date_out_of_range"


def _within_clinical_range(moment: datetime) -> datetime:
    # Aware comparisons never overflow, whatever the offsets (datetime docs).
    if not CLINICAL_EPOCH <= moment < CLINICAL_HORIZON:
        # The message states the range, never the value.
        raise PydanticCustomError(CLINICAL_DATE_OUT_OF_RANGE, f"must lie in {CLINICAL_RANGE}")
    return moment


def _within_clinical_dates(day: date) -> date:
    if not CLINICAL_EPOCH.date() <= day < CLINICAL_HORIZON.date():
        raise PydanticCustomError(
            CLINICAL_DATE_OUT_OF_RANGE, "must lie in [1984-01-01, 2100-01-01) (a UTC date)"
        )
    return day


ClinicalInstant = Annotated[AwareDatetime, AfterValidator(_within_clinical_range)]
ClinicalDate = Annotated[date, AfterValidator(_within_clinical_dates)]

# Standard SF-36 v1 raw-score ranges per domain (sum of item scores). Seed
# 000's Table 2 reports raw scores (e.g. Bodily Pain 5.51 pre-operatively),
# so both raw and 0-100 transformed scores are accepted and kept apart.
SF36_RAW_RANGES: dict[str, tuple[float, float]] = {
    "physical_functioning": (10, 30),
    "role_physical": (4, 8),
    "bodily_pain": (2, 12),
    "general_health": (5, 25),
    "vitality": (4, 24),
    "social_functioning": (2, 10),
    "role_emotional": (3, 6),
    "mental_health": (5, 30),
}

Sf36Domain = Annotated[float, Field(ge=0, le=100)]


class Sf36Scores(Contract):
    """The eight SF-36 domain scores on one declared scale."""

    scale: Literal["raw", "transformed_0_100"]
    physical_functioning: Sf36Domain
    role_physical: Sf36Domain
    bodily_pain: Sf36Domain
    general_health: Sf36Domain
    vitality: Sf36Domain
    social_functioning: Sf36Domain
    role_emotional: Sf36Domain
    mental_health: Sf36Domain

    @field_validator(*SF36_RAW_RANGES)
    @classmethod
    def _raw_score_within_domain_range(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("scale") == "raw" and info.field_name is not None:
            low, high = SF36_RAW_RANGES[info.field_name]
            if not low <= value <= high:
                raise ValueError(f"a raw score must lie in {low:g}..{high:g} for this domain")
        return value
