"""`procedure.performed`: one vertebral procedure, with its treated levels.

Cement leakage is recorded inside the procedure, per treated level, rather
than as a separate event: leakage is judged on the imaging of the procedure
itself, and keeping it with the level makes "leakage per treated level" a
ratio of two counts from one atomic record. A leakage found later is sent as
a corrected procedure (retract + resend), or as a complication if it causes
symptoms.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from spinewatch.contracts.base import Contract, OperatorRef, Sf36Scores, VasScore
from spinewatch.contracts.envelope import EventEnvelope, event_schema_rules
from spinewatch.contracts.schema_rules import (
    each_item,
    given,
    is_value,
    one_of,
    schema_rules,
    unique_by,
    when,
)
from spinewatch.contracts.vocabulary import (
    Anesthesia,
    Approach,
    Histology,
    Indication,
    LeakageImaging,
    LeakageSite,
    ProcedureType,
    Vertebra,
)

CementVolumeMl = Annotated[float, Field(gt=0, le=30)]


class CementLeakage(Contract):
    site: LeakageSite
    volume_ml: float | None = Field(default=None, ge=0, le=30)
    symptomatic: bool


# The level rule in JSON Schema, mirroring _leakage_needs_assessment: a
# leakage needs an imaging that assessed the level, and a site appears once.
_ASSESSED = [imaging for imaging in LeakageImaging if imaging is not LeakageImaging.NOT_ASSESSED]
_LEVEL_RULES = (
    when(
        {"required": ["leakages"], "properties": {"leakages": {"minItems": 1}}},
        one_of("leakage_imaging", _ASSESSED),
    ),
    {"properties": {"leakages": unique_by("site", LeakageSite)}},
)


class TreatedLevel(Contract):
    model_config = ConfigDict(json_schema_extra=schema_rules(*_LEVEL_RULES))

    vertebra: Vertebra
    approach: Approach | None = None
    cement_volume_ml: CementVolumeMl | None = None
    leakage_imaging: LeakageImaging | None = Field(
        default=None, description="How the level was checked for leakage."
    )
    leakages: tuple[CementLeakage, ...] = Field(default=(), max_length=len(LeakageSite))

    @field_validator("leakages")
    @classmethod
    def _leakage_needs_assessment(
        cls, leakages: tuple[CementLeakage, ...], info: ValidationInfo
    ) -> tuple[CementLeakage, ...]:
        imaging = info.data.get("leakage_imaging")
        if leakages and imaging in (None, LeakageImaging.NOT_ASSESSED):
            raise ValueError("leakage reported but leakage_imaging says the level was not assessed")
        sites = [leak.site for leak in leakages]
        if len(sites) != len(set(sites)):
            raise ValueError("each leakage site may appear once per level")
        return leakages


_AUGMENTATION_LEVEL_FIELDS = ("approach", "cement_volume_ml", "leakage_imaging")
_NO_CEMENT = (ProcedureType.RADIOTHERAPY, ProcedureType.TRANSARTERIAL_EMBOLIZATION)

# Mirrors _levels_fit_the_procedure and _histology_needs_biopsy.
_PROCEDURE_RULES = (
    {"properties": {"levels": unique_by("vertebra", Vertebra)}},
    when(
        one_of("procedure_type", [p for p in ProcedureType if p.is_vertebral_augmentation]),
        each_item("levels", given(*_AUGMENTATION_LEVEL_FIELDS)),
    ),
    when(
        one_of("procedure_type", _NO_CEMENT),
        each_item("levels", {"properties": {"cement_volume_ml": {"type": "null"}}}),
    ),
    when(given("histology"), is_value("biopsy_taken", True)),
)


class ProcedurePerformed(EventEnvelope):
    # The validators below, restated for the exported JSON Schema.
    model_config = ConfigDict(json_schema_extra=event_schema_rules(*_PROCEDURE_RULES))

    event_type: Literal["procedure.performed"]
    procedure_type: ProcedureType
    indication: Indication
    levels: tuple[TreatedLevel, ...] = Field(min_length=1, max_length=12)
    anesthesia: Anesthesia
    pre_vas: VasScore | None = None
    pre_sf36: Sf36Scores | None = None
    neurological_deficit_at_presentation: bool
    posterior_wall_intact: bool | None = None
    biopsy_taken: bool
    histology: Histology | None = None
    operator_ref: OperatorRef | None = None
    duration_min: int | None = Field(default=None, ge=1, le=1440)
    blood_loss_ml: float | None = Field(default=None, ge=0, le=10000)

    @field_validator("levels")
    @classmethod
    def _levels_fit_the_procedure(
        cls, levels: tuple[TreatedLevel, ...], info: ValidationInfo
    ) -> tuple[TreatedLevel, ...]:
        vertebrae = [level.vertebra for level in levels]
        if len(vertebrae) != len(set(vertebrae)):
            raise ValueError("a vertebra may appear once per procedure")
        procedure = info.data.get("procedure_type")
        if procedure is None:  # already reported as its own error
            return levels
        if procedure.is_vertebral_augmentation:
            for i, level in enumerate(levels):
                missing = [
                    name for name in _AUGMENTATION_LEVEL_FIELDS if getattr(level, name) is None
                ]
                if missing:
                    raise ValueError(
                        f"level {i} ({level.vertebra.value}) lacks {', '.join(missing)}, "
                        f"required for {procedure.value}"
                    )
        elif procedure in _NO_CEMENT and any(lv.cement_volume_ml is not None for lv in levels):
            raise ValueError(
                f"{procedure.value} injects no cement; cement_volume_ml must be absent"
            )
        return levels

    @field_validator("histology")
    @classmethod
    def _histology_needs_biopsy(
        cls, histology: Histology | None, info: ValidationInfo
    ) -> Histology | None:
        if histology is not None and info.data.get("biopsy_taken") is False:
            raise ValueError("histology given but biopsy_taken is false")
        return histology
