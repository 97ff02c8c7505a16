"""Shared building blocks of the event contracts: model config, identifiers, measures.

Privacy by construction: patients and procedures are referenced only by
UUIDs issued by the sender's pseudonymisation service. A UUID cannot carry a
name, a medical record number or a birth date, so none can be sent by
accident; every model also forbids unknown fields, so a stray `patient_name`
is rejected rather than carried along.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

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
