"""Code systems, extensions and mapping tables of the FHIR door.

Every external code below was checked against a public source, cited row
by row in schemas/fhir/README.md. A code that could not be verified is not
here: an unknown code is rejected with the reason, never guessed into the
nearest category. Each spinewatch vocabulary also has its own code system
(`urn:spinewatch:fhir:codesystem:*`, codes = the contract's values), so a
sender can always say exactly what it means.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

from spinewatch.contracts.vocabulary import (
    ComplicationCategory,
    FollowupTimepoint,
    Indication,
    ProcedureType,
    Relatedness,
    Severity,
    Vertebra,
)

# External code systems, by the URIs FHIR and HL7 Terminology assign them.
CPT: Final = "http://www.ama-assn.org/go/cpt"
SNOMED_CT: Final = "http://snomed.info/sct"
LOINC: Final = "http://loinc.org"
ICD10_CM: Final = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM: Final = "http://unitsofmeasure.org"
AE_SEVERITY: Final = "http://terminology.hl7.org/CodeSystem/adverse-event-severity"
AE_SERIOUSNESS: Final = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness"
AE_OUTCOME: Final = "http://terminology.hl7.org/CodeSystem/adverse-event-outcome"
AE_CAUSALITY: Final = "http://terminology.hl7.org/CodeSystem/adverse-event-causality-assess"
CONDITION_VERIFICATION: Final = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

# The project's own names are URNs, like its JSON Schema ids
# (urn:spinewatch:event:...): nothing to resolve, nothing to squat on.
SPINEWATCH: Final = "urn:spinewatch:fhir"


def _system(name: str) -> str:
    return f"{SPINEWATCH}:codesystem:{name}"


SW_PROCEDURE_TYPE: Final = _system("procedure-type")
SW_INDICATION: Final = _system("indication")
SW_VERTEBRA: Final = _system("vertebra")
SW_COMPLICATION: Final = _system("complication-category")
SW_SEVERITY: Final = _system("severity")
SW_RELATEDNESS: Final = _system("relatedness")


class Ext(StrEnum):
    """spinewatch extensions (schemas/fhir/README.md gives type and place of each)."""

    # On Procedure.
    ANESTHESIA = f"{SPINEWATCH}:extension:anesthesia"  # valueCode, required
    NEUROLOGICAL_DEFICIT = f"{SPINEWATCH}:extension:neurological-deficit"  # valueBoolean, required
    BIOPSY_TAKEN = f"{SPINEWATCH}:extension:biopsy-taken"  # valueBoolean, required
    PRE_VAS = f"{SPINEWATCH}:extension:pre-vas"  # valueInteger | valueDecimal 0-10
    HISTOLOGY = f"{SPINEWATCH}:extension:histology"  # valueCode
    POSTERIOR_WALL_INTACT = f"{SPINEWATCH}:extension:posterior-wall-intact"  # valueBoolean
    # On each Procedure.bodySite (one treated level).
    APPROACH = f"{SPINEWATCH}:extension:approach"  # valueCode
    CEMENT_VOLUME = f"{SPINEWATCH}:extension:cement-volume"  # valueQuantity, UCUM mL
    LEAKAGE_IMAGING = f"{SPINEWATCH}:extension:leakage-imaging"  # valueCode
    CEMENT_LEAKAGE = f"{SPINEWATCH}:extension:cement-leakage"  # complex, repeats
    # On AdverseEvent.
    VERTEBRA = f"{SPINEWATCH}:extension:vertebra"  # valueCoding


# Sub-extensions of cement-leakage (relative names, as FHIR complex extensions use).
LEAKAGE_SITE: Final = "site"  # valueCode
LEAKAGE_VOLUME: Final = "volume"  # valueQuantity, UCUM mL
LEAKAGE_SYMPTOMATIC: Final = "symptomatic"  # valueBoolean

MILLILITRE: Final = "mL"  # UCUM

# CPT 2015+ (AMA), descriptors via the CMS coverage articles. 22512 and
# 22515 are add-on codes for further levels of the same session: the type
# of the procedure is the same.
CPT_PROCEDURES: Final[dict[str, ProcedureType]] = {
    "22510": ProcedureType.PVP,  # vertebroplasty, cervicothoracic
    "22511": ProcedureType.PVP,  # vertebroplasty, lumbosacral
    "22512": ProcedureType.PVP,  # vertebroplasty, each additional body
    "22513": ProcedureType.PKP,  # augmentation with cavity creation (eg kyphoplasty), thoracic
    "22514": ProcedureType.PKP,  # same, lumbar
    "22515": ProcedureType.PKP,  # same, each additional thoracic or lumbar body
}

# SNOMED CT body structures of each vertebra: the TG-263 to SNOMED CT map of
# the HL7 mCODE IG (CM_TG263). C1 and C2 name the whole bone (the atlas has
# no body), S1-S5 the sacral vertebra, the others the vertebral body.
SNOMED_VERTEBRAE: Final[dict[str, Vertebra]] = {
    "14806007": Vertebra.C1,
    "39976000": Vertebra.C2,
    "91116008": Vertebra.C3,
    "14705001": Vertebra.C4,
    "67479001": Vertebra.C5,
    "88298007": Vertebra.C6,
    "16126006": Vertebra.C7,
    "56094003": Vertebra.T1,
    "50060007": Vertebra.T2,
    "73138009": Vertebra.T3,
    "86197001": Vertebra.T4,
    "6105006": Vertebra.T5,
    "32430008": Vertebra.T6,
    "71737002": Vertebra.T7,
    "77435000": Vertebra.T8,
    "33766003": Vertebra.T9,
    "48405002": Vertebra.T10,
    "52120002": Vertebra.T11,
    "280849005": Vertebra.T12,
    "61032001": Vertebra.L1,
    "53983007": Vertebra.L2,
    "55492004": Vertebra.L3,
    "71996003": Vertebra.L4,
    "21799000": Vertebra.L5,
    "65985001": Vertebra.S1,
    "11808007": Vertebra.S2,
    "49967005": Vertebra.S3,
    "69950008": Vertebra.S4,
    "21452006": Vertebra.S5,
}

VERTEBRA_CODES: Final = f"vertebra C1..S5 (SNOMED CT body structure, or {SW_VERTEBRA})"

# ICD-10-CM (FY2026) codes that name an indication without doubt. Full
# billable codes only, with the dot. Left out on purpose: M48.5- (collapsed
# vertebra NEC excludes osteoporotic and neoplastic collapse, so it names no
# cause) and C90.2- (extramedullary plasmacytoma arises outside bone; a
# vertebral plasmacytoma is C90.3-).
ICD10_CM_INDICATIONS: Final[tuple[tuple[re.Pattern[str], Indication], ...]] = (
    (re.compile(r"D18\.09"), Indication.HEMANGIOMA),  # hemangioma of other sites
    (re.compile(r"C79\.51"), Indication.METASTASIS),  # secondary malignant neoplasm of bone
    (re.compile(r"C90\.0[012]"), Indication.MYELOMA_PLASMACYTOMA),  # multiple myeloma
    (re.compile(r"C90\.3[012]"), Indication.MYELOMA_PLASMACYTOMA),  # solitary plasmacytoma
    # Age-related (M80.0-) or other (M80.8-) osteoporosis with current
    # pathological fracture, vertebra(e), with the fracture 7th character.
    (re.compile(r"M80\.[08]8X[ADGKPS]"), Indication.OSTEOPOROTIC),
)

PAIN_SEVERITY_NRS: Final = "72514-3"  # LOINC: pain severity 0-10 verbal numeric rating
SCORE_UNIT: Final = "{score}"  # UCUM annotation LOINC gives for scores

# FHIR's AdverseEvent.severity codes are the contract's first three grades.
AE_SEVERITIES: Final[dict[str, Severity]] = {
    "mild": Severity.MILD,
    "moderate": Severity.MODERATE,
    "severe": Severity.SEVERE,
}
LIFE_THREATENING: Final = "SeriousIsLifeThreatening"  # AE_SERIOUSNESS
RESULTS_IN_DEATH: Final = "SeriousResultsInDeath"  # AE_SERIOUSNESS
FATAL_OUTCOME: Final = "fatal"  # AE_OUTCOME

# WHO-UMC causality terms. FHIR R4 spells them capitalised, HL7 Terminology
# 1.0+ in lower case (case-sensitive systems): both are accepted.
# Conditional/Classified and Unassessable/Unclassifiable state no
# attribution and are rejected.
_WHO_UMC: Final = {
    "certain": Relatedness.DEFINITE,
    "probably-likely": Relatedness.PROBABLE,
    "possible": Relatedness.POSSIBLE,
    "unlikely": Relatedness.UNLIKELY,
}
AE_CAUSALITIES: Final[dict[str, Relatedness]] = {
    **_WHO_UMC,
    **{code.title(): value for code, value in _WHO_UMC.items()},  # "Probably-Likely"
}

# Condition.verificationStatus codes that deny the diagnosis.
DENIED_CONDITIONS: Final = frozenset({"refuted", "entered-in-error"})

# Days since the procedure, counted in UTC calendar days, to the nominal
# timepoint. Day 1-3 is the README's "post-procedure 24-72 h"; day 0 (the
# same day) and anything past month 12's window go to `other` with the day
# count, and `final` is never inferred (one observation cannot know it is
# the last).
TIMEPOINT_WINDOWS: Final[tuple[tuple[int, int, FollowupTimepoint], ...]] = (
    (1, 3, FollowupTimepoint.POST_PROCEDURE),
    (4, 13, FollowupTimepoint.WEEK_1),
    (14, 59, FollowupTimepoint.MONTH_1),
    (60, 134, FollowupTimepoint.MONTH_3),
    (135, 269, FollowupTimepoint.MONTH_6),
    (270, 545, FollowupTimepoint.MONTH_12),
)


def timepoint_for(days: int) -> FollowupTimepoint:
    for first, last, timepoint in TIMEPOINT_WINDOWS:
        if first <= days <= last:
            return timepoint
    return FollowupTimepoint.OTHER


def spinewatch_value(system: str, code: str) -> str | None:
    """The contract value a code of a spinewatch code system stands for, if any."""
    vocabulary = _SPINEWATCH_SYSTEMS.get(system)
    if vocabulary is None:
        return None
    return code if code in {member.value for member in vocabulary} else None


_SPINEWATCH_SYSTEMS: Final[dict[str, type[StrEnum]]] = {
    SW_PROCEDURE_TYPE: ProcedureType,
    SW_INDICATION: Indication,
    SW_VERTEBRA: Vertebra,
    SW_COMPLICATION: ComplicationCategory,
    SW_SEVERITY: Severity,
    SW_RELATEDNESS: Relatedness,
}
