"""Hypothesis strategies for JSON-shaped events, valid by construction.

They build plain dicts, as a hospital system would send them, independently
of the pydantic models: the tests then check the models accept exactly these
and reject targeted corruptions of them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

VERTEBRAE = (
    [f"C{i}" for i in range(1, 8)]
    + [f"T{i}" for i in range(1, 13)]
    + [f"L{i}" for i in range(1, 6)]
    + [f"S{i}" for i in range(1, 6)]
)
INDICATIONS = ["hemangioma", "metastasis", "myeloma_plasmacytoma", "osteoporotic", "other"]
LEAKAGE_SITES = ["paravertebral", "epidural", "foraminal", "venous_pulmonary", "intradiscal"]
TIMEPOINTS = ["post_procedure", "week_1", "month_1", "month_3", "month_6", "month_12"]
OPEN_TIMEPOINTS = ["final", "other"]
CATEGORIES = [
    "symptomatic_cement_leakage",
    "pulmonary_cement_embolism",
    "radiculopathy",
    "neurological_deficit",
    "infection",
    "allergic_or_hemodynamic_reaction",
    "new_vertebral_fracture",
    "reoperation",
    "other",
]
NONFATAL = ["mild", "moderate", "severe", "life_threatening"]
SF36_RAW = {
    "physical_functioning": (10, 30),
    "role_physical": (4, 8),
    "bodily_pain": (2, 12),
    "general_health": (5, 25),
    "vitality": (4, 24),
    "social_functioning": (2, 10),
    "role_emotional": (3, 6),
    "mental_health": (5, 30),
}

uuids = st.uuids().map(str)
slugs = st.from_regex(r"[a-z0-9][a-z0-9-]{1,31}", fullmatch=True)
vas = st.one_of(st.integers(0, 10), st.floats(0, 10, allow_nan=False))
zones = st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-5))])


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    # 2020-2030 at offsets of at most 5 h: well inside the contract's clinical
    # range [1984-01-01Z, 2100-01-01Z) (tests/test_clinical_dates.py tests its edges).
    moment = draw(st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1)))
    return moment.replace(tzinfo=draw(zones)).isoformat()


@st.composite
def sf36(draw: st.DrawFn) -> dict[str, Any]:
    scale = draw(st.sampled_from(["raw", "transformed_0_100"]))
    scores: dict[str, Any] = {"scale": scale}
    for domain, (low, high) in SF36_RAW.items():
        lo, hi = (low, high) if scale == "raw" else (0, 100)
        scores[domain] = draw(st.floats(lo, hi, allow_nan=False))
    return scores


@st.composite
def envelope(draw: st.DrawFn, event_type: str) -> dict[str, Any]:
    return {
        "event_id": draw(uuids),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": draw(timestamps()),
        "recorded_at": draw(timestamps()),
        "source": draw(st.from_regex(r"[a-z0-9][a-z0-9._-]{1,20}", fullmatch=True)),
        "site_id": draw(slugs),
        "patient_ref": draw(uuids),
        "procedure_id": draw(uuids),
    }


@st.composite
def augmented_level(draw: st.DrawFn, vertebra: str) -> dict[str, Any]:
    imaging = draw(st.sampled_from(["fluoroscopy", "radiograph", "ct", "not_assessed"]))
    leaks: list[dict[str, Any]] = []
    if imaging != "not_assessed":
        for site in draw(st.lists(st.sampled_from(LEAKAGE_SITES), unique=True, max_size=3)):
            leak: dict[str, Any] = {"site": site, "symptomatic": draw(st.booleans())}
            if draw(st.booleans()):
                leak["volume_ml"] = draw(st.floats(0, 5, allow_nan=False))
            leaks.append(leak)
    return {
        "vertebra": vertebra,
        "approach": draw(st.sampled_from(["unipedicular", "bipedicular"])),
        "cement_volume_ml": draw(st.floats(0.5, 12, allow_nan=False)),
        "leakage_imaging": imaging,
        "leakages": leaks,
    }


@st.composite
def procedure_performed(draw: st.DrawFn) -> dict[str, Any]:
    event = draw(envelope("procedure.performed"))
    vertebrae = draw(st.lists(st.sampled_from(VERTEBRAE), min_size=1, max_size=5, unique=True))
    biopsy = draw(st.booleans())
    event |= {
        "procedure_type": draw(st.sampled_from(["pvp", "pkp"])),
        "indication": draw(st.sampled_from(INDICATIONS)),
        "levels": [draw(augmented_level(v)) for v in vertebrae],
        "anesthesia": draw(st.sampled_from(["local", "sedation", "general"])),
        "neurological_deficit_at_presentation": draw(st.booleans()),
        "biopsy_taken": biopsy,
    }
    optional = {
        "pre_vas": vas,
        "pre_sf36": sf36(),
        "posterior_wall_intact": st.booleans(),
        "operator_ref": st.from_regex(r"op-[a-z0-9]{3,24}", fullmatch=True),
        "duration_min": st.integers(1, 1440),
        "blood_loss_ml": st.floats(0, 500, allow_nan=False),
    }
    if biopsy:
        optional["histology"] = st.sampled_from(["hemangioma", "metastatic_carcinoma", "pending"])
    for name, strategy in optional.items():
        if draw(st.booleans()):
            event[name] = draw(strategy)
    return event


@st.composite
def followup_recorded(draw: st.DrawFn) -> dict[str, Any]:
    event = draw(envelope("followup.recorded"))
    timepoint = draw(st.sampled_from(TIMEPOINTS + OPEN_TIMEPOINTS))
    event["timepoint"] = timepoint
    if timepoint in OPEN_TIMEPOINTS or draw(st.booleans()):
        event["days_since_procedure"] = draw(st.integers(0, 3650))
    event["vas"] = draw(vas)
    if draw(st.booleans()):
        event["sf36"] = draw(sf36())
    if draw(st.booleans()):
        event["analgesic_use"] = draw(st.sampled_from(["less", "same", "more"]))
    return event


@st.composite
def complication_reported(draw: st.DrawFn) -> dict[str, Any]:
    event = draw(envelope("complication.reported"))
    if draw(st.integers(0, 9)) == 0:
        event |= {"category": "death", "severity": "fatal"}
    else:
        event |= {
            "category": draw(st.sampled_from(CATEGORIES)),
            "severity": draw(st.sampled_from(NONFATAL)),
        }
    event["relatedness"] = draw(
        st.sampled_from(["definite", "probable", "possible", "unlikely", "unrelated"])
    )
    event["days_after_procedure"] = draw(st.integers(0, 3650))
    if draw(st.booleans()):
        event["vertebra"] = draw(st.sampled_from(VERTEBRAE))
    return event


@st.composite
def event_retracted(draw: st.DrawFn) -> dict[str, Any]:
    event = draw(envelope("event.retracted"))
    event["target_event_id"] = draw(uuids.filter(lambda u: u != event["event_id"]))
    event["reason"] = draw(
        st.sampled_from(["entered_in_error", "wrong_patient", "duplicate_record", "superseded"])
    )
    return event


EVENT_STRATEGIES = {
    "procedure.performed": procedure_performed(),
    "followup.recorded": followup_recorded(),
    "complication.reported": complication_reported(),
    "event.retracted": event_retracted(),
}
any_event = st.one_of(*EVENT_STRATEGIES.values())
