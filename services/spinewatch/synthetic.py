"""Seeded synthetic cohorts of PVP/PKP events for the demo, end-to-end tests and benchmarks.

Pure Python (no I/O, clock or network): randomness comes only from
`random.Random` streams derived from the seed, so the same arguments give
byte-identical output. Each site has its own stream, so changing one site's
profile (e.g. adding drift) leaves the other sites' events alone.

Every outcome probability is read from the literature baseline catalog via
`CALIBRATION` (parameter -> entry id). Numbers defined here (`_ASSUMED_*`,
`_SHAPES`) cover what the catalog does not report (missed visits, imaging,
anaesthesia, severity grading) and set no outcome rate, except the
documented `_ASSUMED_ZERO_EVENT_FLOOR`. Events hold only pseudonymous UUIDs
and coded values: nothing like a name, a record number or a birth date.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, TypeVar

from spinewatch.baselines import BaselineEntry, load_catalog
from spinewatch.baselines.model import Bound, MeanSd, Proportion, Quantity, Share, ValueRange
from spinewatch.contracts import Indication, ProcedureType, Vertebra

Event = dict[str, Any]
CaseMix = Mapping[tuple[ProcedureType, Indication], float]
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
    # P(symptomatic | leak) = symptomatic patients / leaking levels (1/26 : 3/28).
    "leakage_symptomatic.numerator": "s000.leakage.symptomatic",
    "leakage_symptomatic.denominator": "s000.leakage.per_level",
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
}

# Generator assumption, not a literature figure: seed 000 saw no new fracture
# and no pulmonary embolism in 26 patients (0/26). A zero rate would never
# exercise those event paths, so zero counts become 1 in 500 patients.
_ASSUMED_ZERO_EVENT_FLOOR = 0.002
# Process and data-entry assumptions (no outcome depends on them directly).
_ASSUMED_MISSED_FOLLOWUP = 0.07  # per timepoint
_ASSUMED_IMAGING = {"ct": 0.55, "fluoroscopy": 0.35, "radiograph": 0.05, "not_assessed": 0.05}
_ASSUMED_LEVEL_COUNTS = {1: 0.92, 2: 0.06, 3: 0.02}  # seed 000: 28 levels in 26 patients
_ASSUMED_BIOPSY = {True: 0.92, False: 0.5}  # by Indication.is_suspected_tumour
_ASSUMED_DEFICIT_AT_PRESENTATION = 0.03
_ASSUMED_ANALGESIC_MORE = 0.3  # share of "more" within "same or more"
_ASSUMED_ANESTHESIA = {"local": 0.6, "sedation": 0.3, "general": 0.1}
_ASSUMED_OPERATIVE_CV = 0.25  # SD of operative time relative to its mean

# Timing (days after procedure), possible severities and relatedness of each
# generated complication; deaths in metastatic series are mostly the disease.
_SHAPES = {
    "radiculopathy": ((0, 14), "mild moderate", "probable definite"),
    "pulmonary_cement_embolism": ((0, 3), "mild moderate severe", "definite"),
    "neurological_deficit": ((0, 30), "moderate severe", "possible probable"),
    "reoperation": ((1, 60), "severe", "probable definite"),
    "new_vertebral_fracture": ((30, 365), "mild moderate", "possible unlikely"),
    "death": ((14, 365), "fatal", "unrelated unlikely"),
}
# Categories whose missing cohort figures are scaled from hemangioma (Pilitis).
_SCALED = ("radiculopathy", "reoperation", "new_vertebral_fracture", "pulmonary_cement_embolism")
_HISTOLOGY = {  # by indication; values of the contracts' Histology vocabulary
    "hemangioma": "hemangioma",
    "metastasis": "metastatic_carcinoma",
    "myeloma_plasmacytoma": "plasmacytoma_myeloma",
    "osteoporotic": "osteoporotic_no_tumour",
}
_SPINE = [Vertebra(f"T{i}") for i in range(1, 13)] + [Vertebra(f"L{i}") for i in range(1, 6)]
_MONTH_DAYS = 30.44
_YEAR_MINUTES = 365 * 24 * 60
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,31}$")
DEFAULT_START = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class SiteProfile:
    """One treating site: its volume, case mix and (optionally) a leakage drift."""

    site_id: str
    procedures: int  # how many index procedures
    case_mix: CaseMix  # relative weights of (procedure, indication)
    operators: int = 3
    leakage_odds_ratio: float = 1.0  # multiplies the baseline odds of leakage per level
    drift_after: int | None = None  # odds ratio applies from this procedure index on

    def __post_init__(self) -> None:
        if not _SLUG.match(self.site_id):
            raise ValueError(f"site_id {self.site_id!r} is not a slug")
        if self.procedures < 0 or self.operators < 1 or self.leakage_odds_ratio <= 0:
            raise ValueError("need procedures >= 0, operators >= 1, leakage_odds_ratio > 0")
        if min(self.case_mix.values(), default=-1) < 0 or sum(self.case_mix.values()) <= 0:
            raise ValueError("case_mix needs non-negative weights with a positive sum")


@dataclass(frozen=True)
class SyntheticCohort:
    events: tuple[Event, ...]  # every distinct event, JSON-ready, in occurred_at order
    deliveries: tuple[bytes, ...]  # message values in send order, faults included
    malformed: tuple[bytes, ...]  # the malformed payloads included in deliveries
    duplicates: int  # how many redelivered copies are in deliveries


def encode(event: Mapping[str, Any]) -> bytes:
    """Compact, key-sorted JSON: the same event always gives the same bytes."""
    return json.dumps(dict(event), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def default_sites(total_procedures: int) -> tuple[SiteProfile, ...]:
    """Five sites with distinct case mixes whose volumes sum to `total_procedures`."""
    if total_procedures < 0:
        raise ValueError("total_procedures must be >= 0")
    pvp, pkp, rt = ProcedureType.PVP, ProcedureType.PKP, ProcedureType.RADIOTHERAPY
    hem, met, mye = Indication.HEMANGIOMA, Indication.METASTASIS, Indication.MYELOMA_PLASMACYTOMA
    ost, oth = Indication.OSTEOPOROTIC, Indication.OTHER
    mixes: list[tuple[str, float, CaseMix]] = [  # radiotherapy: a non-augmentation pathway
        ("riverside", 0.30, {(pvp, hem): 0.8, (pkp, hem): 0.1, (pvp, ost): 0.05, (rt, hem): 0.05}),
        ("oncology-central", 0.25, {(pvp, met): 0.55, (pkp, met): 0.2, (pvp, mye): 0.25}),
        ("st-anne-ortho", 0.20, {(pkp, ost): 0.7, (pvp, ost): 0.25, (pkp, oth): 0.05}),
        ("eastside", 0.15, {(pvp, hem): 0.3, (pvp, met): 0.3, (pkp, ost): 0.3, (pvp, oth): 0.1}),
        ("west-clinic", 0.10, {(pvp, hem): 0.5, (pkp, hem): 0.2, (pvp, ost): 0.3}),
    ]
    counts = [int(total_procedures * share) for _, share, _ in mixes]
    counts[0] += total_procedures - sum(counts)  # rounding remainder to the largest site
    return tuple(
        SiteProfile(site_id=name, procedures=n, case_mix=mix, operators=2 + i % 3)
        for i, ((name, _, mix), n) in enumerate(zip(mixes, counts, strict=True))
    )


def generate_cohort(
    seed: int,
    sites: Sequence[SiteProfile],
    *,
    duplicate_share: float = 0.01,
    malformed: int = 1,
    retractions: int = 2,
    late_followups: int = 1,
    early_followups: int = 1,
    start: datetime = DEFAULT_START,
) -> SyntheticCohort:
    """Generate a cohort and its delivery stream; deterministic in all arguments.

    `duplicate_share` of the distinct events are re-sent later as the same
    bytes; `early_followups` follow-ups are sent just before their own
    procedure and `late_followups` after everything else; `malformed` broken
    payloads (mutated valid events) are mixed in; `retractions` follow-ups or
    complications are retracted as entered in error. Raises ValueError when
    the cohort has too few follow-ups or complications for these faults.
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if len({s.site_id for s in sites}) != len(sites):
        raise ValueError("site ids must be unique")
    if not 0 <= duplicate_share <= 1 or min(malformed, retractions) < 0:
        raise ValueError("need duplicate_share in 0..1 and non-negative counts")
    events = [e for site in sites for e in _site_events(seed, site, start.astimezone(UTC))]
    events += _retractions(_stream(seed, "retractions"), events, retractions)
    # Fixed-width UTC ISO strings sort chronologically; event_id breaks ties.
    events.sort(key=lambda e: (e["occurred_at"], e["event_id"]))
    rng = _stream(seed, "delivery")
    broken = _malformed(rng, events, malformed)
    order, tail = _order(rng, events, late=late_followups, early=early_followups)
    payloads = [encode(e) for e in events]
    sent = [payloads[i] for i in order]
    # Redeliveries go anywhere after their original, malformed payloads anywhere.
    redelivered = rng.sample(range(len(sent)), round(duplicate_share * len(sent)))
    extras = [(p + 1, sent[p]) for p in redelivered] + [(0, raw) for raw in broken]
    deliveries = _insert(rng, sent, extras) + [payloads[i] for i in tail]
    return SyntheticCohort(tuple(events), tuple(deliveries), tuple(broken), len(redelivered))


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
def _rate(name: str) -> float:
    return _catalog_rate(CALIBRATION[name])


def _stat(name: str, kind: type[_Stat]) -> _Stat:
    """The statistic behind a calibration parameter, checked to be of the expected kind."""
    stat = _entry(CALIBRATION[name]).statistic
    if not isinstance(stat, kind):
        raise TypeError(f"{name}: {CALIBRATION[name]} is not a {kind.__name__}")
    return stat


@cache
def _leakage_rate(procedure: ProcedureType, indication: Indication) -> float:
    if procedure is ProcedureType.PKP:
        return _rate("leakage_per_level.pkp")
    return _rate(f"leakage_per_level.pvp.{indication.value}")


@cache
def _complication_rate(category: str, indication: Indication) -> float:
    """Per-patient probability of one complication category for an indication."""
    own = f"complication.{category}.{indication.value}"
    if own in CALIBRATION:
        rate = _rate(own)
    elif category in _SCALED:
        rate = _rate(f"complication.{category}.hemangioma")
        scale = f"complication_scale.{indication.value}"
        if scale in CALIBRATION:  # "other" keeps the hemangioma figure
            rate *= _rate(scale) / _rate("complication_scale.hemangioma")
    else:
        return 0.0  # no figure for this cohort, and none is invented
    return min(1.0, rate or _ASSUMED_ZERO_EVENT_FLOOR)


# --- one site, one patient ----------------------------------------------------


@dataclass(frozen=True)
class _Case:
    rng: random.Random
    site_id: str
    patient_ref: str
    procedure_id: str
    when: datetime
    procedure: ProcedureType
    indication: Indication


def _stream(seed: int, name: str) -> random.Random:
    """An independent, reproducible stream (str seeds hash with SHA-512, not PYTHONHASHSEED)."""
    return random.Random(f"spinewatch.synthetic:{seed}:{name}")  # noqa: S311 - a simulation


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _pick(rng: random.Random, weights: Mapping[Any, float]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _site_events(seed: int, site: SiteProfile, start: datetime) -> list[Event]:
    rng = _stream(seed, f"site:{site.site_id}")
    operators = [f"op-{rng.getrandbits(32):08x}" for _ in range(site.operators)]
    mix = dict(sorted(site.case_mix.items(), key=lambda kv: (kv[0][0].value, kv[0][1].value)))
    kinds = rng.choices(list(mix), weights=list(mix.values()), k=site.procedures)
    # Times first, sorted, so drift_after counts procedures in clinical order.
    minutes = sorted(rng.randrange(_YEAR_MINUTES) for _ in range(site.procedures))
    events: list[Event] = []
    for index, ((procedure, indication), minute) in enumerate(zip(kinds, minutes, strict=True)):
        when = start + timedelta(minutes=minute)
        case = _Case(rng, site.site_id, _uuid(rng), _uuid(rng), when, procedure, indication)
        drifting = site.drift_after is None or index >= site.drift_after
        odds_ratio = site.leakage_odds_ratio if drifting else 1.0
        events.append(_procedure(case, rng.choice(operators), odds_ratio))
        found, death_day = _complications(case, events[-1]["levels"])
        events += found + _followups(case, death_day)
    return events


def _envelope(case: _Case, event_type: str, occurred: datetime, recorded: datetime) -> Event:
    return {
        "event_id": _uuid(case.rng),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": occurred.isoformat(),
        "recorded_at": recorded.isoformat(),
        "source": f"{'ris' if event_type == 'procedure.performed' else 'ehr'}-{case.site_id}",
        "site_id": case.site_id,
        "patient_ref": case.patient_ref,
        "procedure_id": case.procedure_id,
    }


def _vas(rng: random.Random, name: str) -> float:
    stat = _stat(name, MeanSd)
    return round(min(10.0, max(0.0, rng.gauss(stat.mean, stat.sd))), 1)


def _procedure(case: _Case, operator: str, odds_ratio: float) -> Event:
    rng = case.rng
    recorded = case.when + timedelta(minutes=rng.randint(30, 36 * 60))
    base = _leakage_rate(case.procedure, case.indication)
    leak_p = odds_ratio * base / (1 - base + odds_ratio * base)  # odds times odds_ratio
    levels = [_level(rng, v, case.procedure, leak_p) for v in _vertebrae(rng)]
    biopsy = rng.random() < _ASSUMED_BIOPSY[case.indication.is_suspected_tumour]
    event = _envelope(case, "procedure.performed", case.when, recorded) | {
        "procedure_type": case.procedure.value,
        "indication": case.indication.value,
        "levels": levels,
        "anesthesia": _pick(rng, _ASSUMED_ANESTHESIA),
        "pre_vas": _vas(rng, "vas.pre"),
        "neurological_deficit_at_presentation": rng.random() < _ASSUMED_DEFICIT_AT_PRESENTATION,
        "biopsy_taken": biopsy,
        "operator_ref": operator,
    }
    if case.procedure.is_vertebral_augmentation:  # seed 000's PVP figures fit PVP/PKP only
        minutes = _stat("operative_time_min", Quantity).value
        blood = _stat("blood_loss_ml", ValueRange)
        event["duration_min"] = max(10, round(rng.gauss(minutes, minutes * _ASSUMED_OPERATIVE_CV)))
        event["blood_loss_ml"] = round(rng.uniform(blood.low, blood.high), 1)
    if biopsy and case.indication.value in _HISTOLOGY:
        event["histology"] = _HISTOLOGY[case.indication.value]
    return event


def _vertebrae(rng: random.Random) -> list[Vertebra]:
    """Adjacent levels, starting in the thoracic spine as often as in seed 000."""
    count = _pick(rng, _ASSUMED_LEVEL_COUNTS)
    thoracic = rng.random() < _rate("thoracic_level_share")
    first = rng.randint(0, 11) if thoracic else rng.randint(12, len(_SPINE) - 1)
    first = min(first, len(_SPINE) - count)
    return _SPINE[first : first + count]


def _level(
    rng: random.Random, vertebra: Vertebra, procedure: ProcedureType, leak_p: float
) -> Event:
    if not procedure.is_vertebral_augmentation:
        return {"vertebra": vertebra.value}  # no cement injected, nothing to leak
    imaging = _pick(rng, _ASSUMED_IMAGING)
    unipedicular = rng.random() < _rate("approach.unipedicular")
    volume = _stat("cement_volume_ml", ValueRange)
    # Every draw is made whatever the outcome, so cohorts differing only in
    # leakage_odds_ratio differ only in which levels leak (common random numbers).
    leaks = rng.random() < leak_p
    site = _pick(rng, {s: _rate(f"leakage_site.{s}") for s in ("paravertebral", "foraminal")})
    symptomatic = rng.random() < _rate("leakage_symptomatic.numerator") / _rate(
        "leakage_symptomatic.denominator"
    )
    # A level nobody imaged reports no leak (and leaves the denominator).
    reported = leaks and imaging != "not_assessed"
    return {
        "vertebra": vertebra.value,
        "approach": "unipedicular" if unipedicular else "bipedicular",
        "cement_volume_ml": round(rng.uniform(volume.low, volume.high), 1),
        "leakage_imaging": imaging,
        "leakages": [{"site": site, "symptomatic": symptomatic}] if reported else [],
    }


def _complications(case: _Case, levels: list[Event]) -> tuple[list[Event], int | None]:
    """Complications of an augmentation procedure, and the day of death if any."""
    if not case.procedure.is_vertebral_augmentation:
        return [], None  # the catalog has no complication figures for other pathways
    rng, found, death_day = case.rng, [], None
    for category, ((low, high), severities, relatedness) in _SHAPES.items():
        if rng.random() >= _complication_rate(category, case.indication):
            continue
        day = rng.randint(low, high)
        occurred = case.when + timedelta(days=day, hours=rng.randint(1, 12))
        recorded = occurred + timedelta(hours=rng.randint(0, 7 * 24))
        event = _envelope(case, "complication.reported", occurred, recorded) | {
            "category": category,
            "severity": rng.choice(severities.split()),
            "relatedness": rng.choice(relatedness.split()),
            "days_after_procedure": day,
        }
        if category == "new_vertebral_fracture":  # the level next to the treated block
            treated = [_SPINE.index(Vertebra(level["vertebra"])) for level in levels]
            nearby = [i for i in (min(treated) - 1, max(treated) + 1) if 0 <= i < len(_SPINE)]
            event["vertebra"] = _SPINE[rng.choice(nearby)].value
        death_day = day if category == "death" else death_day
        found.append(event)
    return found, death_day


def _followups(case: _Case, death_day: int | None) -> list[Event]:
    """post_procedure (VAS), week_1 (analgesics), final (VAS); some visits are missed."""
    rng = case.rng
    months = _stat("final_followup_months", ValueRange)
    final_day = rng.randint(round(months.low * _MONTH_DAYS), round(months.high * _MONTH_DAYS))
    worse = rng.random() < _rate("analgesic_same_or_more.week_1")
    more = rng.random() < _ASSUMED_ANALGESIC_MORE
    analgesic = ("more" if more else "same") if worse else "less"
    plan: list[tuple[str, int, Event]] = [
        ("post_procedure", rng.randint(1, 3), {"vas": _vas(rng, "vas.post")}),
        ("week_1", rng.randint(6, 9), {"analgesic_use": analgesic}),
        ("final", final_day, {"vas": _vas(rng, "vas.final"), "days_since_procedure": final_day}),
    ]
    events = []
    for timepoint, day, measures in plan:
        missed = rng.random() < _ASSUMED_MISSED_FOLLOWUP
        if missed or (death_day is not None and day >= death_day):
            continue
        occurred = case.when + timedelta(days=day, minutes=rng.randint(0, 8 * 60))
        recorded = occurred + timedelta(minutes=rng.randint(5, 3 * 24 * 60))
        envelope = _envelope(case, "followup.recorded", occurred, recorded)
        events.append(envelope | {"timepoint": timepoint} | measures)
    return events


# --- faults: retractions, malformed payloads, delivery order ------------------


def _retractions(rng: random.Random, events: list[Event], count: int) -> list[Event]:
    """Entered-in-error retractions of follow-ups/complications, after their target."""
    kinds = ("followup.recorded", "complication.reported")
    candidates = [e for e in events if e["event_type"] in kinds]
    if count > len(candidates):
        raise ValueError(f"{count} retractions requested, only {len(candidates)} targets")
    out = []
    for target in rng.sample(candidates, count):
        when = datetime.fromisoformat(target["recorded_at"]) + timedelta(hours=rng.randint(1, 72))
        kept = ("schema_version", "source", "site_id", "patient_ref", "procedure_id")
        out.append({k: target[k] for k in kept} | {
            "event_id": _uuid(rng),
            "event_type": "event.retracted",
            "occurred_at": when.isoformat(),
            "recorded_at": (when + timedelta(minutes=rng.randint(0, 60))).isoformat(),
            "target_event_id": target["event_id"],
            "reason": "entered_in_error",
        })  # fmt: skip
    return out


def _malformed(rng: random.Random, events: list[Event], count: int) -> list[bytes]:
    """Broken payloads made by mutating valid events, one defect kind after another."""
    pool = [e for e in events if e["event_type"] == "followup.recorded"] or events
    if count and not pool:
        raise ValueError("malformed payloads need at least one event to mutate")
    out = []
    for k in range(count):
        event = dict(rng.choice(pool), event_id=_uuid(rng))
        if k % 3 == 0:  # schema violation: VAS as a string, an unknown timepoint
            event |= {"vas": str(event.get("vas", 5.0)), "timepoint": "month_2"}
        elif k % 3 == 1:  # a producer from the future
            event["schema_version"] = 2
        raw = encode(event)
        out.append(raw[: len(raw) // 2] if k % 3 == 2 else raw)  # cut off in transit
    return out


def _order(
    rng: random.Random, events: list[Event], *, late: int, early: int
) -> tuple[list[int], list[int]]:
    """Send order of event indices, and the late tail sent after everything else."""
    if min(late, early) < 0:
        raise ValueError("late/early follow-up counts must be >= 0")
    retracted = {e["target_event_id"] for e in events if e["event_type"] == "event.retracted"}
    # Retraction targets stay in place so every retraction arrives after its target.
    movable = [
        i
        for i, e in enumerate(events)
        if e["event_type"] == "followup.recorded" and e["event_id"] not in retracted
    ]
    if late + early > len(movable):
        raise ValueError("not enough follow-ups for the requested late/early deliveries")
    picked = rng.sample(movable, late + early)
    tail = set(picked[:late])
    order = [i for i in range(len(events)) if i not in tail]
    procedure_at = {e["procedure_id"]: i for i, e in enumerate(events) if "levels" in e}
    for i in picked[late:]:  # move just before its own procedure
        order.remove(i)
        order.insert(order.index(procedure_at[events[i]["procedure_id"]]), i)
    return order, sorted(tail)


def _insert(rng: random.Random, sent: list[bytes], extras: list[tuple[int, bytes]]) -> list[bytes]:
    """Insert each (earliest slot, payload) at a random slot s >= earliest (before sent[s])."""
    slots: defaultdict[int, list[bytes]] = defaultdict(list)
    for earliest, raw in extras:
        slots[rng.randint(earliest, len(sent))].append(raw)
    out: list[bytes] = []
    for slot, raw in enumerate(sent):
        out += [*slots[slot], raw]
    return out + slots[len(sent)]
