"""Where each number of the synthetic generator comes from.

Every outcome probability is read from the literature baseline catalog via
`CALIBRATION` (parameter -> entry id). Numbers defined here (`ASSUMED_*`,
`SHAPES`) cover what the catalog does not report (missed visits, imaging,
anaesthesia, severity grading) and set no outcome rate, except the
documented `ASSUMED_ZERO_EVENT_FLOOR`. Kept apart from the event builders
(`events`) so the whole calibration can be audited in one place.
"""

from __future__ import annotations

from functools import cache
from typing import TypeVar

from spinewatch.baselines import BaselineEntry, load_catalog
from spinewatch.baselines.model import Bound, MeanSd, Proportion, Quantity, Share, ValueRange
from spinewatch.contracts import Indication, ProcedureType

_Stat = TypeVar("_Stat", MeanSd, ValueRange, Quantity)

# Parameter -> catalog entry id. Fallbacks, where the catalog has no figure
# for a cohort, are marked; the closest cohort's figure is used instead.
CALIBRATION: dict[str, str] = {
    "leakage_per_level.pvp.hemangioma": "s000.leakage.per_level",
    # Cancer series; the seed gives no unit, read as patients. Used per level
    # as an approximation (most patients have one treated level).
    "leakage_per_level.pvp.metastasis": "s003.leakage.vp_vs_kp.vp",
    "leakage_per_level.pvp.myeloma_plasmacytoma": "s003.leakage.vp_vs_kp.vp",
    # Fallback: no PVP leakage figure for these cohorts; seed 000 is the only
    # PVP per-level count (s003's 2-73% range is too wide to be a rate).
    "leakage_per_level.pvp.osteoporotic": "s000.leakage.per_level",
    "leakage_per_level.pvp.other": "s000.leakage.per_level",
    # "< 10%" for kyphoplasty in general: the bound is used as the rate, so
    # it slightly overstates PKP leakage. (s003's 0% for PKP has no n.)
    "leakage_per_level.pkp": "s001.leakage.pkp_below_10",
    # Symptomatic leakage per patient (1/26): its weight among the
    # complication categories (see `symptomatic_leak_given_leak`).
    "leakage_symptomatic.numerator": "s000.leakage.symptomatic",
    # Where cement leaks: relative weights of the two sites seed 000 counted.
    "leakage_site.paravertebral": "s000.leakage.paravertebral",
    "leakage_site.foraminal": "s000.leakage.foraminal",
    # VAS is published for hemangioma only; used for every cohort (fallback).
    "vas.pre": "s000.vas.pre",
    "vas.post": "s000.vas.post",
    "vas.final": "s000.vas.final",
    "analgesic_same_or_more.week_1": "s001.cohen.analgesic",
    "final_followup_months": "s000.follow_up.range",
    "approach.unipedicular": "s000.approach.unipedicular",
    "cement_volume_ml": "s000.cement_volume",
    "operative_time_min": "s000.operative_time",
    "blood_loss_ml": "s000.blood_loss",
    "thoracic_level_share": "s000.cohort.thoracic_levels",
    # Complications per patient, by category and indication. A scaled
    # category missing for an indication takes the hemangioma figure times
    # Pilitis' complication rate of that indication relative to hemangioma.
    "complication.radiculopathy.hemangioma": "s000.radiculopathy",
    "complication.radiculopathy.metastasis": "s003.table1.weill.radiculopathy",
    "complication.radiculopathy.myeloma_plasmacytoma": "s003.table1.cortet.radiculopathy",
    "complication.reoperation.hemangioma": "s000.reoperation",
    "complication.reoperation.metastasis": "s003.table1.cortet.reoperation",
    "complication.reoperation.myeloma_plasmacytoma": "s003.table1.cortet.reoperation",
    "complication.new_vertebral_fracture.hemangioma": "s000.new_fracture",
    "complication.pulmonary_cement_embolism.hemangioma": "s000.pulmonary_embolism",
    # Fallback for myeloma: Kaemmerlen's myelopathy is a metastasis series.
    "complication.neurological_deficit.metastasis": "s003.table1.kaemmerlen.myelopathy",
    "complication.neurological_deficit.myeloma_plasmacytoma": "s003.table1.kaemmerlen.myelopathy",
    "complication.death.metastasis": "s003.table1.weill.death",
    "complication_scale.hemangioma": "s003.pilitis.hemangioma",
    "complication_scale.metastasis": "s003.pilitis.metastasis",
    # Fallback for myeloma: Pilitis gives no myeloma figure; metastasis is closest.
    "complication_scale.myeloma_plasmacytoma": "s003.pilitis.metastasis",
    "complication_scale.osteoporotic": "s003.pilitis.osteoporotic",
    # Any procedure-related complication per patient: the figure the cohort
    # report compares with. Drawn once per patient; the category is then
    # chosen in proportion to the category figures above. Drawing every
    # category independently summed per-series figures from different
    # papers (seed 000's radiculopathy and reoperation were one patient)
    # and gave 8-22% where the literature says 2.5-10%.
    "complication_any.hemangioma": "s001.complication.pvp",
    "complication_any.metastasis": "s003.pilitis.metastasis",
    # Fallback for myeloma: Pilitis gives no myeloma figure; metastasis is closest.
    "complication_any.myeloma_plasmacytoma": "s003.pilitis.metastasis",
    "complication_any.osteoporotic": "s003.pilitis.osteoporotic",
}

# Generator assumption, not a literature figure: seed 000 saw no new fracture
# and no pulmonary embolism in 26 patients (0/26). A zero rate would never
# exercise those event paths, so zero counts become 1 in 500 patients.
ASSUMED_ZERO_EVENT_FLOOR = 0.002
# Process and data-entry assumptions (no outcome depends on them directly).
ASSUMED_MISSED_FOLLOWUP = 0.07  # per timepoint
ASSUMED_IMAGING = {"ct": 0.55, "fluoroscopy": 0.35, "radiograph": 0.05, "not_assessed": 0.05}
ASSUMED_LEVEL_COUNTS = {1: 0.92, 2: 0.06, 3: 0.02}  # seed 000: 28 levels in 26 patients
ASSUMED_BIOPSY = {True: 0.92, False: 0.5}  # by Indication.is_suspected_tumour
ASSUMED_DEFICIT_AT_PRESENTATION = 0.03
ASSUMED_ANALGESIC_MORE = 0.3  # share of "more" within "same or more"
ASSUMED_ANESTHESIA = {"local": 0.6, "sedation": 0.3, "general": 0.1}
ASSUMED_OPERATIVE_CV = 0.25  # SD of operative time relative to its mean

# Timing (days after procedure), possible severities and relatedness of each
# generated complication. Every category but death is procedure-related
# (it is drawn through the any-complication figure); deaths in metastatic
# series are mostly the disease, drawn apart and never counted as related.
SHAPES = {
    "radiculopathy": ((0, 14), "mild moderate", "probable definite"),
    "pulmonary_cement_embolism": ((0, 3), "mild moderate severe", "definite"),
    "neurological_deficit": ((0, 30), "moderate severe", "possible probable"),
    "reoperation": ((1, 60), "severe", "probable definite"),
    "new_vertebral_fracture": ((30, 365), "mild moderate", "possible probable"),
    "death": ((14, 365), "fatal", "unrelated unlikely"),
}
UNRELATED_CATEGORIES = ("death",)
RELATED_CATEGORIES = tuple(c for c in SHAPES if c not in UNRELATED_CATEGORIES)
# Categories whose missing cohort figures are scaled from hemangioma (Pilitis).
_SCALED = ("radiculopathy", "reoperation", "new_vertebral_fracture", "pulmonary_cement_embolism")


# --- catalog look-ups ---------------------------------------------------------


@cache
def _entry(entry_id: str) -> BaselineEntry:
    return {e.id: e for e in load_catalog().baselines}[entry_id]


def _catalog_rate(entry_id: str) -> float:
    """A rate from a proportion, share, bound (its value) or fraction range (midpoint)."""
    stat = _entry(entry_id).statistic
    if isinstance(stat, Proportion | Share | Bound):
        return stat.value
    if isinstance(stat, ValueRange) and stat.unit == "fraction":
        return (stat.low + stat.high) / 2
    raise TypeError(f"{entry_id} holds a {stat.kind}, not a rate")


@cache
def calibrated_rate(name: str) -> float:
    """The rate behind a calibration parameter."""
    return _catalog_rate(CALIBRATION[name])


def calibrated_stat(name: str, kind: type[_Stat]) -> _Stat:
    """The statistic behind a calibration parameter, checked to be of the expected kind."""
    stat = _entry(CALIBRATION[name]).statistic
    if not isinstance(stat, kind):
        raise TypeError(f"{name}: {CALIBRATION[name]} is not a {kind.__name__}")
    return stat


@cache
def leakage_rate(procedure: ProcedureType, indication: Indication) -> float:
    """Baseline probability that cement leaks at one treated level of this cohort."""
    if procedure is ProcedureType.PKP:
        return calibrated_rate("leakage_per_level.pkp")
    return calibrated_rate(f"leakage_per_level.pvp.{indication.value}")


@cache
def any_complication_rate(indication: Indication) -> float:
    """Per-patient probability of any procedure-related complication."""
    own = f"complication_any.{indication.value}"
    # "other" has no figure of its own: it takes the hemangioma one.
    return calibrated_rate(own if own in CALIBRATION else "complication_any.hemangioma")


@cache
def complication_rate(category: str, indication: Indication) -> float:
    """Per-patient probability of one complication category for an indication."""
    own = f"complication.{category}.{indication.value}"
    if own in CALIBRATION:
        rate = calibrated_rate(own)
    elif category in _SCALED:
        rate = calibrated_rate(f"complication.{category}.hemangioma")
        scale = f"complication_scale.{indication.value}"
        if scale in CALIBRATION:  # "other" keeps the hemangioma figure
            rate *= calibrated_rate(scale) / calibrated_rate("complication_scale.hemangioma")
    else:
        return 0.0  # no figure for this cohort, and none is invented
    return min(1.0, rate or ASSUMED_ZERO_EVENT_FLOOR)


@cache
def symptomatic_leak_given_leak(procedure: ProcedureType, indication: Indication) -> float:
    """P(a reported leak causes symptoms), so symptomatic leaks fit the complication figure.

    A symptomatic leak is a procedure-related complication. Drawn at seed
    000's own ratio (1 symptomatic patient for 3 leaking levels), it alone
    gives PVP in hemangioma ~3.8% complications per patient, above the 2.5%
    the cohort report and the drift charts compare with (s001); a stable
    synthetic site would then be "worse than the literature" by
    construction. So symptomatic leakage takes its share of the
    any-complication figure instead, its weight among the category figures
    being seed 000's 1/26, and the other categories the rest
    (`other_complication_rate`). A site whose leakage odds drift gets more
    symptomatic leaks too, as it would.
    """
    share = symptomatic_complication_share(indication)
    per_patient = any_complication_rate(indication) * share
    levels = sum(count * weight for count, weight in ASSUMED_LEVEL_COUNTS.items())
    imaged = 1.0 - ASSUMED_IMAGING["not_assessed"]
    leaking_levels_per_patient = leakage_rate(procedure, indication) * levels * imaged
    return min(1.0, per_patient / leaking_levels_per_patient)


@cache
def symptomatic_complication_share(indication: Indication) -> float:
    """Symptomatic leakage's weight among the related complication categories."""
    symptomatic = calibrated_rate("leakage_symptomatic.numerator")
    others = sum(complication_rate(c, indication) for c in RELATED_CATEGORIES)
    return symptomatic / (symptomatic + others)


@cache
def other_complication_rate(indication: Indication) -> float:
    """Per-patient probability of a related complication other than a symptomatic leak."""
    return any_complication_rate(indication) * (1.0 - symptomatic_complication_share(indication))
