"""Clinical time is bounded at the contract: [1984-01-01Z, 2100-01-01Z), compared in UTC.

Before the bound, `9999-12-31T23:59:59-23:59` passed the contract and the
engine's `clinical_date` then raised "year 10000 is out of range".
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spinewatch.contracts import ProcedurePerformed, parse_event
from spinewatch.contracts.base import CLINICAL_EPOCH, CLINICAL_HORIZON, CLINICAL_RANGE
from spinewatch.contracts.drift import DriftSentinel
from spinewatch.domain.drift.events import clinical_date
from spinewatch.domain.outcomes.facts import ProcedureFact, fact_of
from spinewatch.errors import InvalidEvent
from tests.strategies import any_event, procedure_performed

CODE = "clinical_date_out_of_range"

# (value, accepted): the instants the issue names, and offsets that carry a
# local time across a bound once it is read in UTC.
INSTANTS = [
    ("9999-12-31T23:59:59-23:59", False),
    ("0001-01-01T00:00:00+23:59", False),
    ("1983-12-31T23:59:59Z", False),
    ("1984-01-01T00:00:00Z", True),
    ("2099-12-31T23:59:59Z", True),
    ("2099-12-31T23:59:59.999999+00:00", True),
    ("2100-01-01T00:00:00Z", False),
    ("1984-01-01T00:30:00+01:00", False),  # 1983-12-31T23:30Z
    ("1983-12-31T23:30:00-01:00", True),  # 1984-01-01T00:30Z
    ("2099-12-31T23:30:00-01:00", False),  # 2100-01-01T00:30Z
    ("2100-01-01T00:30:00+01:00", True),  # 2099-12-31T23:30Z
]


@pytest.mark.parametrize("field", ["occurred_at", "recorded_at"])
@pytest.mark.parametrize(("value", "accepted"), INSTANTS, ids=[v for v, _ in INSTANTS])
@settings(max_examples=3, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_clinical_time_must_lie_in_range_in_utc(
    field: str, value: str, accepted: bool, data: st.DataObject
) -> None:
    payload: dict[str, Any] = copy.deepcopy(data.draw(any_event))
    payload[field] = value
    raw = json.dumps(payload)
    if accepted:
        event = parse_event(raw)
        assert getattr(event, field) == datetime.fromisoformat(value)
        return
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    errors = caught.value.errors
    assert [(e.location, e.code) for e in errors] == [(field, CODE)]
    # The message states the range and never echoes the value: it is the
    # same text whatever the value was.
    assert str(caught.value) == f"{field}: must lie in {CLINICAL_RANGE} [{CODE}]"
    assert CLINICAL_RANGE == "[1984-01-01T00:00:00Z, 2100-01-01T00:00:00Z), compared in UTC"


def test_the_range_is_in_the_exported_schema() -> None:
    schema = ProcedurePerformed.model_json_schema()
    for field in ("occurred_at", "recorded_at"):
        assert (
            "[1984-01-01T00:00:00Z, 2100-01-01T00:00:00Z)"
            in (schema["properties"][field]["description"])
        )


@pytest.mark.parametrize(
    "moment",
    [CLINICAL_EPOCH, CLINICAL_HORIZON - timedelta(microseconds=1)],
    ids=["first", "last"],
)
@given(payload=procedure_performed())
@settings(max_examples=5)
def test_the_bounds_survive_the_engine_date_arithmetic(
    moment: datetime, payload: dict[str, Any]
) -> None:
    payload["occurred_at"] = moment.isoformat()
    fact = fact_of(parse_event(json.dumps(payload)))
    assert isinstance(fact, ProcedureFact)
    day = clinical_date((fact.occurred_at_us, b""))
    assert day == moment.date()
    # ... and the drift contract takes the date the engine derives.
    assert DriftSentinel.model_validate_json(_sentinel(day)).occurred_on == day


def test_the_longest_follow_up_stays_inside_datetime() -> None:
    # DaysSinceProcedure allows 36,500 days after a procedure at the horizon.
    last = CLINICAL_HORIZON + timedelta(days=36_500)
    assert last < datetime.max.replace(tzinfo=UTC) - timedelta(days=1)


@pytest.mark.parametrize(
    ("day", "accepted"),
    [(date(1983, 12, 31), False), (date(1984, 1, 1), True), (date(2099, 12, 31), True),
     (date(2100, 1, 1), False), (date(9999, 12, 31), False)],
)  # fmt: skip
def test_drift_dates_are_clinical_dates(day: date, accepted: bool) -> None:
    if accepted:
        assert DriftSentinel.model_validate_json(_sentinel(day)).occurred_on == day
        return
    with pytest.raises(ValueError, match=CODE):
        DriftSentinel.model_validate_json(_sentinel(day))


def _sentinel(day: date) -> str:
    return json.dumps(
        {
            "event_type": "drift.sentinel",
            "schema_version": 1,
            "sentinel_id": "6f1c1f64-2b1e-5d0a-9f5e-0c7a3b2d1e4f",
            "site_id": "north",
            "metric": "death_rate",
            "procedure_type": "pvp",
            "indication": "osteoporotic",
            "occurred_on": day.isoformat(),
        }
    )
