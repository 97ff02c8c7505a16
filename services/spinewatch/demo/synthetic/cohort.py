"""Seeded synthetic cohorts of PVP/PKP events for the demo, end-to-end tests and benchmarks.

Pure Python (no I/O, clock or network): randomness comes only from
`random.Random` streams derived from the seed, so the same arguments give
byte-identical output. Each site has its own stream, so changing one site's
profile (e.g. adding drift) leaves the other sites' events alone.

Every outcome probability is read from the literature baseline catalog via
`CALIBRATION` (parameter -> entry id); that table and the generator's own
assumptions live in `calibration`, the per-site event builders in
`events`, the site profile in `profiles`. This module is the public surface: the
cohort, and the faults of its delivery stream. Events hold only pseudonymous
UUIDs and coded values: nothing like a name, a record number or a birth date.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from spinewatch.contracts import Indication, ProcedureType
from spinewatch.contracts.registry import schema_versions
from spinewatch.demo.synthetic.calibration import CALIBRATION
from spinewatch.demo.synthetic.events import random_uuid, seeded_stream, site_events
from spinewatch.demo.synthetic.profiles import CaseMix, Event, SiteProfile

# Re-exported on purpose: callers import every generator name from this module.
__all__ = [
    "CALIBRATION",
    "DEFAULT_START",
    "CaseMix",
    "Event",
    "SiteProfile",
    "SyntheticCohort",
    "default_sites",
    "encode",
    "generate_cohort",
]

DEFAULT_START = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)


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
    events = [e for site in sites for e in site_events(seed, site, start.astimezone(UTC))]
    events += _retractions(seeded_stream(seed, "retractions"), events, retractions)
    # Fixed-width UTC ISO strings sort chronologically; event_id breaks ties.
    events.sort(key=lambda e: (e["occurred_at"], e["event_id"]))
    rng = seeded_stream(seed, "delivery")
    broken = _malformed(rng, events, malformed)
    order, tail = _order(rng, events, late=late_followups, early=early_followups)
    payloads = [encode(e) for e in events]
    sent = [payloads[i] for i in order]
    # Redeliveries go anywhere after their original, malformed payloads anywhere.
    redelivered = rng.sample(range(len(sent)), round(duplicate_share * len(sent)))
    extras = [(p + 1, sent[p]) for p in redelivered] + [(0, raw) for raw in broken]
    deliveries = _insert(rng, sent, extras) + [payloads[i] for i in tail]
    return SyntheticCohort(tuple(events), tuple(deliveries), tuple(broken), len(redelivered))


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
            "event_id": random_uuid(rng),
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
        event = dict(rng.choice(pool), event_id=random_uuid(rng))
        if k % 3 == 0:  # schema violation: VAS as a string, an unknown timepoint
            event |= {"vas": str(event.get("vas", 5.0)), "timepoint": "month_2"}
        elif k % 3 == 1:  # a producer from the future
            event["schema_version"] = 1 + max(schema_versions(event["event_type"]))
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
