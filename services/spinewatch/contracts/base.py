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
from uuid import UUID

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

from spinewatch.contracts.schema_rules import is_value, schema_rules, when

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


# The exported schemas restate the range as patterns, because JSON Schema
# cannot compare dates, and because `format` is only an annotation in Draft
# 2020-12 (most validators do not check it unless told to). An instant's
# pattern is RFC 3339 with the written year bounded to 1983-2100, a
# necessary condition: an offset (at most 23:59) moves the UTC instant by
# less than a day, so whether 1983-12-31T23:00:00-02:00 lies in the range is
# arithmetic left to the engine. It also excludes the leap second (":60"),
# which RFC 3339 allows and the engine's parser rejects. A date has no
# offset, so its pattern states the range exactly.
CLINICAL_INSTANT_PATTERN = (
    r"^(?:198[3-9]|199[0-9]|20[0-9]{2}|2100)-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
CLINICAL_DATE_PATTERN = (
    r"^(?:198[4-9]|199[0-9]|20[0-9]{2})-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])$"
)
# What no pattern can say, listed in every event schema's description.
CLINICAL_RANGE_RESIDUE = (
    f"occurred_at and recorded_at lie in {CLINICAL_RANGE} (code {CLINICAL_DATE_OUT_OF_RANGE}): "
    "the pattern bounds the written year to 1983-2100; within a day of either bound, "
    "the UTC offset decides, and JSON Schema cannot do that arithmetic"
)
CALENDAR_DAY_RESIDUE = (
    "a date's day exists in its month and year (2023-02-29 does not): the patterns allow "
    "days 01-31; a validator that asserts format date-time (RFC 3339) checks it"
)

ClinicalInstant = Annotated[
    AwareDatetime,
    AfterValidator(_within_clinical_range),
    Field(json_schema_extra={"pattern": CLINICAL_INSTANT_PATTERN}),
]
ClinicalDate = Annotated[
    date,
    AfterValidator(_within_clinical_dates),
    Field(json_schema_extra={"pattern": CLINICAL_DATE_PATTERN}),
]

# A UUID as the engine reads it from a sender: the hyphenated hex form. The
# pattern makes the schema check it even where `format: uuid` is not asserted.
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
Uuid = Annotated[UUID, Field(json_schema_extra={"pattern": UUID_PATTERN})]

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

    # Mirrors _raw_score_within_domain_range.
    model_config = ConfigDict(
        json_schema_extra=schema_rules(
            when(
                is_value("scale", "raw"),
                {
                    "properties": {
                        domain: {"minimum": low, "maximum": high}
                        for domain, (low, high) in SF36_RAW_RANGES.items()
                    }
                },
            )
        )
    )

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
