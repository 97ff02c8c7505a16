"""Controlled vocabularies of the event contracts.

Every clinical attribute that may end up as a metric label or a cohort key is
a closed enumeration: no free text travels through the pipeline, so nothing
identifying can leak into metrics by accident, and label cardinality stays
bounded. Values are lower_snake_case and stable; renaming one is a breaking
schema change.
"""

from __future__ import annotations

from enum import StrEnum


class ProcedureType(StrEnum):
    """Interventions named in the seed documents.

    PVP and PKP are the procedures spinewatch monitors; the others appear in
    the seeds' management algorithms for vertebral hemangioma (seeds 002/004)
    and are accepted so a hospital can send its whole spine-tumour pathway.
    """

    PVP = "pvp"  # percutaneous vertebroplasty
    PKP = "pkp"  # balloon kyphoplasty
    TRANSARTERIAL_EMBOLIZATION = "transarterial_embolization"
    DECOMPRESSION_LAMINECTOMY = "decompression_laminectomy"
    VERTEBRECTOMY = "vertebrectomy"
    RADIOTHERAPY = "radiotherapy"

    @property
    def is_vertebral_augmentation(self) -> bool:
        """Cement is injected into the vertebral body (PVP, PKP)."""
        return self in (ProcedureType.PVP, ProcedureType.PKP)


class Indication(StrEnum):
    HEMANGIOMA = "hemangioma"
    METASTASIS = "metastasis"
    MYELOMA_PLASMACYTOMA = "myeloma_plasmacytoma"
    OSTEOPOROTIC = "osteoporotic"
    OTHER = "other"

    @property
    def is_suspected_tumour(self) -> bool:
        """Seed 003: biopsy before VP is 'determinant suspecting oncologic diseases'."""
        return self in (
            Indication.HEMANGIOMA,
            Indication.METASTASIS,
            Indication.MYELOMA_PLASMACYTOMA,
        )


class Approach(StrEnum):
    UNIPEDICULAR = "unipedicular"
    BIPEDICULAR = "bipedicular"


class Anesthesia(StrEnum):
    LOCAL = "local"
    SEDATION = "sedation"  # conscious sedation with local infiltration
    GENERAL = "general"


class LeakageSite(StrEnum):
    """Where cement went outside the vertebral body (seed 000 discussion)."""

    PARAVERTEBRAL = "paravertebral"
    EPIDURAL = "epidural"  # spinal canal
    FORAMINAL = "foraminal"
    VENOUS_PULMONARY = "venous_pulmonary"
    INTRADISCAL = "intradiscal"


class LeakageImaging(StrEnum):
    """How a level was checked for leakage.

    Detection depends heavily on modality (CT finds far more than
    fluoroscopy), which is one reason published per-level leakage rates span
    2-73% (seed 003). A level that was not assessed must not enter a leakage
    denominator.
    """

    FLUOROSCOPY = "fluoroscopy"
    RADIOGRAPH = "radiograph"
    CT = "ct"
    NOT_ASSESSED = "not_assessed"


class Histology(StrEnum):
    HEMANGIOMA = "hemangioma"
    METASTATIC_CARCINOMA = "metastatic_carcinoma"
    PLASMACYTOMA_MYELOMA = "plasmacytoma_myeloma"
    LYMPHOMA = "lymphoma"
    OSTEOPOROTIC_NO_TUMOUR = "osteoporotic_no_tumour"
    OTHER_TUMOUR = "other_tumour"
    NONDIAGNOSTIC = "nondiagnostic"
    PENDING = "pending"


class FollowupTimepoint(StrEnum):
    """Assessment timepoints; `final` and `other` carry days since procedure."""

    POST_PROCEDURE = "post_procedure"  # 24-72 h, seed 000's "postoperative"
    WEEK_1 = "week_1"
    MONTH_1 = "month_1"
    MONTH_3 = "month_3"
    MONTH_6 = "month_6"
    MONTH_12 = "month_12"
    FINAL = "final"
    OTHER = "other"

    @property
    def needs_days_since_procedure(self) -> bool:
        return self in (FollowupTimepoint.FINAL, FollowupTimepoint.OTHER)


class AnalgesicUse(StrEnum):
    """Analgesic use compared with before the procedure (seed 001, Cohen et al)."""

    LESS = "less"
    SAME = "same"
    MORE = "more"


class NeurologicalStatus(StrEnum):
    """Neurological examination at follow-up, against the pre-procedure examination.

    The seeds report neurological outcome as a change, not as a grade:
    "neurological improvement in 7 of 10 patients", "70% of patients with
    deficits improve after decompression" (seed 002), "Full neurological
    recovery achieved in all 11 patients" (seed 004). A Frankel/ASIA grade
    would also need the pre-procedure grade, which `procedure.performed`
    does not carry (only `neurological_deficit_at_presentation`), so the
    change itself is recorded. Follow-up schema version 2 and later.
    """

    RECOVERED = "recovered"  # the deficit resolved completely (also an improvement)
    IMPROVED = "improved"  # better, with a residual deficit
    UNCHANGED = "unchanged"  # includes "normal before, normal now"
    WORSE = "worse"  # a deficit worsened, or a new one appeared

    @property
    def counts_as_improvement(self) -> bool:
        return self in (NeurologicalStatus.RECOVERED, NeurologicalStatus.IMPROVED)


class PainRelief(StrEnum):
    """Pain relief at follow-up, against the pain that led to the procedure.

    The seeds' categories: "complete resolution of back pain" (seeds
    002/004, embolization), "pain relief" (seeds 002/004, decompression),
    complete / partial / no response (seed 001, radiotherapy). Follow-up
    schema version 2 and later.
    """

    COMPLETE = "complete"
    PARTIAL = "partial"
    NONE = "none"


class ComplicationCategory(StrEnum):
    SYMPTOMATIC_CEMENT_LEAKAGE = "symptomatic_cement_leakage"
    PULMONARY_CEMENT_EMBOLISM = "pulmonary_cement_embolism"
    RADICULOPATHY = "radiculopathy"  # nerve-root pain
    NEUROLOGICAL_DEFICIT = "neurological_deficit"  # incl. spinal cord compression
    INFECTION = "infection"
    ALLERGIC_OR_HEMODYNAMIC_REACTION = "allergic_or_hemodynamic_reaction"
    NEW_VERTEBRAL_FRACTURE = "new_vertebral_fracture"  # adjacent or distant
    REOPERATION = "reoperation"
    DEATH = "death"
    OTHER = "other"


class Severity(StrEnum):
    """Severity graded like CTCAE grades 1-5."""

    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"
    LIFE_THREATENING = "life_threatening"
    FATAL = "fatal"


class Relatedness(StrEnum):
    """Attribution of a complication to the procedure."""

    DEFINITE = "definite"
    PROBABLE = "probable"
    POSSIBLE = "possible"
    UNLIKELY = "unlikely"
    UNRELATED = "unrelated"

    @property
    def counts_as_procedure_related(self) -> bool:
        return self in (Relatedness.DEFINITE, Relatedness.PROBABLE, Relatedness.POSSIBLE)


class RetractionReason(StrEnum):
    ENTERED_IN_ERROR = "entered_in_error"
    WRONG_PATIENT = "wrong_patient"
    WRONG_PROCEDURE = "wrong_procedure"
    DUPLICATE_RECORD = "duplicate_record"
    SUPERSEDED = "superseded"  # a corrected event replaces it


class Vertebra(StrEnum):
    """C1..C7, T1..T12, L1..L5, S1..S5."""

    C1 = "C1"
    C2 = "C2"
    C3 = "C3"
    C4 = "C4"
    C5 = "C5"
    C6 = "C6"
    C7 = "C7"
    T1 = "T1"
    T2 = "T2"
    T3 = "T3"
    T4 = "T4"
    T5 = "T5"
    T6 = "T6"
    T7 = "T7"
    T8 = "T8"
    T9 = "T9"
    T10 = "T10"
    T11 = "T11"
    T12 = "T12"
    L1 = "L1"
    L2 = "L2"
    L3 = "L3"
    L4 = "L4"
    L5 = "L5"
    S1 = "S1"
    S2 = "S2"
    S3 = "S3"
    S4 = "S4"
    S5 = "S5"
