"""How one site's synthetic events are built: procedures, complications, follow-ups.

Randomness comes only from `seeded_stream`, one stream per site, so a site's
events depend on nothing but the seed and its own profile. Every number the
builders draw against comes from `calibration`; this module only
shapes events as the contracts expect. Events hold only pseudonymous UUIDs
and coded values.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from spinewatch.baselines.model import MeanSd, Quantity, ValueRange
from spinewatch.contracts import Indication, ProcedureType, Vertebra
from spinewatch.demo.synthetic.calibration import (
    ASSUMED_ANALGESIC_MORE,
    ASSUMED_ANESTHESIA,
    ASSUMED_BIOPSY,
    ASSUMED_DEFICIT_AT_PRESENTATION,
    ASSUMED_IMAGING,
    ASSUMED_LEVEL_COUNTS,
    ASSUMED_MISSED_FOLLOWUP,
    ASSUMED_OPERATIVE_CV,
    RELATED_CATEGORIES,
    SHAPES,
    UNRELATED_CATEGORIES,
    calibrated_rate,
    calibrated_stat,
    complication_rate,
    leakage_rate,
    other_complication_rate,
    symptomatic_leak_given_leak,
)
from spinewatch.demo.synthetic.profiles import Event, SiteProfile

_HISTOLOGY = {  # by indication; values of the contracts' Histology vocabulary
    "hemangioma": "hemangioma",
    "metastasis": "metastatic_carcinoma",
    "myeloma_plasmacytoma": "plasmacytoma_myeloma",
    "osteoporotic": "osteoporotic_no_tumour",
}
_SPINE = [Vertebra(f"T{i}") for i in range(1, 13)] + [Vertebra(f"L{i}") for i in range(1, 6)]
_MONTH_DAYS = 30.44
_YEAR_MINUTES = 365 * 24 * 60


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


def seeded_stream(seed: int, name: str) -> random.Random:
    """An independent, reproducible stream (str seeds hash with SHA-512, not PYTHONHASHSEED)."""
    # The prefix names the public module, not this one: it is part of every
    # seed, so changing it would change every generated cohort.
    return random.Random(f"spinewatch.synthetic:{seed}:{name}")  # noqa: S311 - a simulation


def random_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _pick(rng: random.Random, weights: Mapping[Any, float]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def site_events(seed: int, site: SiteProfile, start: datetime) -> list[Event]:
    rng = seeded_stream(seed, f"site:{site.site_id}")
    operators = [f"op-{rng.getrandbits(32):08x}" for _ in range(site.operators)]
    mix = dict(sorted(site.case_mix.items(), key=lambda kv: (kv[0][0].value, kv[0][1].value)))
    kinds = rng.choices(list(mix), weights=list(mix.values()), k=site.procedures)
    # Times first, sorted, so drift_after counts procedures in clinical order.
    minutes = sorted(rng.randrange(_YEAR_MINUTES) for _ in range(site.procedures))
    events: list[Event] = []
    for index, ((procedure, indication), minute) in enumerate(zip(kinds, minutes, strict=True)):
        when = start + timedelta(minutes=minute)
        case = _Case(
            rng, site.site_id, random_uuid(rng), random_uuid(rng), when, procedure, indication
        )
        drifting = (site.drift_after is None or index >= site.drift_after) and (
            site.drift_until is None or index < site.drift_until
        )
        odds_ratio = site.leakage_odds_ratio if drifting else 1.0
        events.append(_procedure(case, rng.choice(operators), odds_ratio))
        found, death_day = _complications(case, events[-1]["levels"])
        events += found + _followups(case, death_day)
    return events


def _envelope(case: _Case, event_type: str, occurred: datetime, recorded: datetime) -> Event:
    return {
        "event_id": random_uuid(case.rng),
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
    stat = calibrated_stat(name, MeanSd)
    return round(min(10.0, max(0.0, rng.gauss(stat.mean, stat.sd))), 1)


def _procedure(case: _Case, operator: str, odds_ratio: float) -> Event:
    rng = case.rng
    recorded = case.when + timedelta(minutes=rng.randint(30, 36 * 60))
    base = leakage_rate(case.procedure, case.indication)
    leak_p = odds_ratio * base / (1 - base + odds_ratio * base)  # odds times odds_ratio
    symptomatic_p = symptomatic_leak_given_leak(case.procedure, case.indication)
    levels = [_level(rng, v, case.procedure, leak_p, symptomatic_p) for v in _vertebrae(rng)]
    biopsy = rng.random() < ASSUMED_BIOPSY[case.indication.is_suspected_tumour]
    event = _envelope(case, "procedure.performed", case.when, recorded) | {
        "procedure_type": case.procedure.value,
        "indication": case.indication.value,
        "levels": levels,
        "anesthesia": _pick(rng, ASSUMED_ANESTHESIA),
        "pre_vas": _vas(rng, "vas.pre"),
        "neurological_deficit_at_presentation": rng.random() < ASSUMED_DEFICIT_AT_PRESENTATION,
        "biopsy_taken": biopsy,
        "operator_ref": operator,
    }
    if case.procedure.is_vertebral_augmentation:  # seed 000's PVP figures fit PVP/PKP only
        minutes = calibrated_stat("operative_time_min", Quantity).value
        blood = calibrated_stat("blood_loss_ml", ValueRange)
        event["duration_min"] = max(10, round(rng.gauss(minutes, minutes * ASSUMED_OPERATIVE_CV)))
        event["blood_loss_ml"] = round(rng.uniform(blood.low, blood.high), 1)
    if biopsy and case.indication.value in _HISTOLOGY:
        event["histology"] = _HISTOLOGY[case.indication.value]
    return event


def _vertebrae(rng: random.Random) -> list[Vertebra]:
    """Adjacent levels, starting in the thoracic spine as often as in seed 000."""
    count = _pick(rng, ASSUMED_LEVEL_COUNTS)
    thoracic = rng.random() < calibrated_rate("thoracic_level_share")
    first = rng.randint(0, 11) if thoracic else rng.randint(12, len(_SPINE) - 1)
    first = min(first, len(_SPINE) - count)
    return _SPINE[first : first + count]


def _level(
    rng: random.Random,
    vertebra: Vertebra,
    procedure: ProcedureType,
    leak_p: float,
    symptomatic_p: float,
) -> Event:
    if not procedure.is_vertebral_augmentation:
        return {"vertebra": vertebra.value}  # no cement injected, nothing to leak
    imaging = _pick(rng, ASSUMED_IMAGING)
    unipedicular = rng.random() < calibrated_rate("approach.unipedicular")
    volume = calibrated_stat("cement_volume_ml", ValueRange)
    # Every draw is made whatever the outcome, so cohorts differing only in
    # leakage_odds_ratio differ only in which levels leak (common random numbers).
    leaks = rng.random() < leak_p
    site = _pick(
        rng, {s: calibrated_rate(f"leakage_site.{s}") for s in ("paravertebral", "foraminal")}
    )
    symptomatic = rng.random() < symptomatic_p
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
    """Complications of an augmentation procedure, and the day of death if any.

    At most one procedure-related complication per patient besides a
    symptomatic leak (drawn with the levels), at the share of the cohort's
    any-complication figure that symptomatic leaks leave, its category in
    proportion to the category figures; deaths (the disease, not the
    procedure) are drawn apart.
    """
    if not case.procedure.is_vertebral_augmentation:
        return [], None  # the catalog has no complication figures for other pathways
    rng, drawn = case.rng, []
    weights = [complication_rate(c, case.indication) for c in RELATED_CATEGORIES]
    if sum(weights) > 0 and rng.random() < other_complication_rate(case.indication):
        drawn.append(rng.choices(RELATED_CATEGORIES, weights)[0])
    drawn += [
        c for c in UNRELATED_CATEGORIES if rng.random() < complication_rate(c, case.indication)
    ]
    found, death_day = [], None
    for category in drawn:
        (low, high), severities, relatedness = SHAPES[category]
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
    months = calibrated_stat("final_followup_months", ValueRange)
    final_day = rng.randint(round(months.low * _MONTH_DAYS), round(months.high * _MONTH_DAYS))
    worse = rng.random() < calibrated_rate("analgesic_same_or_more.week_1")
    more = rng.random() < ASSUMED_ANALGESIC_MORE
    analgesic = ("more" if more else "same") if worse else "less"
    plan: list[tuple[str, int, Event]] = [
        ("post_procedure", rng.randint(1, 3), {"vas": _vas(rng, "vas.post")}),
        ("week_1", rng.randint(6, 9), {"analgesic_use": analgesic}),
        ("final", final_day, {"vas": _vas(rng, "vas.final"), "days_since_procedure": final_day}),
    ]
    events = []
    for timepoint, day, measures in plan:
        missed = rng.random() < ASSUMED_MISSED_FOLLOWUP
        if missed or (death_day is not None and day >= death_day):
            continue
        occurred = case.when + timedelta(days=day, minutes=rng.randint(0, 8 * 60))
        recorded = occurred + timedelta(minutes=rng.randint(5, 3 * 24 * 60))
        envelope = _envelope(case, "followup.recorded", occurred, recorded)
        events.append(envelope | {"timepoint": timepoint} | measures)
    return events
