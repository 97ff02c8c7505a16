"""Seeded sites whose follow-up return rate is set per procedure, for the completeness tests.

Every patient is PVP for hemangioma with seed 000-like VAS (pre 7.4 +- 1.6,
post-procedure 1.7 +- 0.6): the patients who come back have published-like
pain relief, so only the return rate differs between sites.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday

Event = dict[str, Any]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _vas(rng: random.Random, mean: float, sd: float) -> float:
    return round(min(10.0, max(0.0, rng.gauss(mean, sd))), 1)


def site_events(
    site_id: str,
    procedures: int,
    return_rate: Callable[[int], float],
    seed: int,
    every: timedelta = timedelta(hours=12),
) -> list[Event]:
    """`procedures` procedures `every` apart; procedure i's follow-ups return with
    probability return_rate(i), each timepoint on its own."""
    rng = random.Random(f"followup-test:{seed}:{site_id}")
    events: list[Event] = []
    for index in range(procedures):
        when = START + index * every + timedelta(minutes=rng.randint(0, 120))
        patient, procedure = _uuid(rng), _uuid(rng)

        def envelope(
            kind: str,
            occurred: datetime,
            recorded: datetime,
            patient: str = patient,
            procedure: str = procedure,
        ) -> Event:
            return {
                "event_id": _uuid(rng),
                "event_type": kind,
                "schema_version": 1,
                "occurred_at": occurred.isoformat(),
                "recorded_at": recorded.isoformat(),
                "source": f"ehr-{site_id}",
                "site_id": site_id,
                "patient_ref": patient,
                "procedure_id": procedure,
            }

        events.append(
            envelope("procedure.performed", when, when + timedelta(hours=1))
            | {
                "procedure_type": "pvp",
                "indication": "hemangioma",
                "levels": [
                    {
                        "vertebra": "L3",
                        "approach": "unipedicular",
                        "cement_volume_ml": 4.0,
                        "leakage_imaging": "fluoroscopy",
                        "leakages": [],
                    }
                ],
                "pre_vas": _vas(rng, 7.4, 1.6),
                "neurological_deficit_at_presentation": False,
                "biopsy_taken": True,
                "histology": "hemangioma",
                "operator_ref": "op-one",
                "anesthesia": "local",
            }
        )
        rate = return_rate(index)
        plan = (
            ("post_procedure", rng.randint(1, 3), {"vas": _vas(rng, 1.7, 0.6)}),
            ("week_1", rng.randint(6, 9), {"analgesic_use": "less"}),
        )
        for timepoint, day, measures in plan:
            if rng.random() >= rate:
                continue
            occurred = when + timedelta(days=day, minutes=rng.randint(0, 480))
            recorded = occurred + timedelta(minutes=rng.randint(5, 2 * 24 * 60))
            events.append(envelope("followup.recorded", occurred, recorded) | {
                "timepoint": timepoint, **measures
            })  # fmt: skip
    return events


def in_clinical_order(events: list[Event]) -> list[Event]:
    return sorted(events, key=lambda e: datetime.fromisoformat(e["occurred_at"]))
