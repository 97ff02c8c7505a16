"""Event contracts: valid events parse, every defect is a field-level error."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from spinewatch.contracts import EVENT_MODELS, ProcedurePerformed, parse_event
from spinewatch.contracts.registry import _Document, _field_error
from spinewatch.errors import InvalidEvent
from tests.strategies import (
    EVENT_STRATEGIES,
    any_event,
    complication_reported,
    event_retracted,
    followup_recorded,
    procedure_performed,
)

Event = dict[str, Any]


def rejection(payload: Event | bytes) -> InvalidEvent:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    return caught.value


def locations(error: InvalidEvent) -> set[str]:
    return {e.location for e in error.errors}


@pytest.mark.parametrize("event_type", sorted(EVENT_STRATEGIES))
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_events_of_every_type_parse_and_round_trip(
    event_type: str, data: st.DataObject
) -> None:
    payload = data.draw(EVENT_STRATEGIES[event_type])
    event = parse_event(json.dumps(payload))
    assert type(event) is EVENT_MODELS[event_type]
    assert str(event.event_id) == payload["event_id"]
    assert parse_event(event.model_dump_json()) == event


@given(payload=any_event)
def test_events_are_immutable(payload: Event) -> None:
    event = parse_event(json.dumps(payload))
    with pytest.raises(ValidationError):
        event.site_id = "elsewhere"


ENVELOPE_FIELDS = [
    "event_id", "schema_version", "occurred_at", "recorded_at",
    "source", "site_id", "patient_ref", "procedure_id",
]  # fmt: skip


@given(payload=any_event, field=st.sampled_from(ENVELOPE_FIELDS))
def test_missing_envelope_field_is_named(payload: Event, field: str) -> None:
    del payload[field]
    error = rejection(payload)
    assert field in locations(error)
    assert any(e.code == "missing" for e in error.errors if e.location == field)


def _set(path: str, value: object) -> Callable[[Event], Event]:
    def corrupt(event: Event) -> Event:
        target: Any = event
        *parents, leaf = path.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[leaf] = value
        return event

    return corrupt


def _drop(path: str) -> Callable[[Event], Event]:
    def corrupt(event: Event) -> Event:
        target: Any = event
        *parents, leaf = path.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[leaf]
        return event

    return corrupt


# (strategy, corruption, field the error must name, error code); an unknown
# field (extra_forbidden) is named by its position, see the test below
DEFECTS = [
    (procedure_performed(), _set("pre_vas", 10.5), "pre_vas", "less_than_equal"),
    (procedure_performed(), _set("pre_vas", -1), "pre_vas", "greater_than_equal"),
    (procedure_performed(), _set("pre_vas", "7"), "pre_vas", "float_type"),
    (procedure_performed(), _set("levels.0.vertebra", "T13"), "levels.0.vertebra", "enum"),
    (procedure_performed(), _set("levels.0.approach", "transpedicular"), "levels.0.approach", "enum"),
    (procedure_performed(), _set("levels.0.cement_volume_ml", 0), "levels.0.cement_volume_ml", "greater_than"),
    (procedure_performed(), _drop("levels.0.cement_volume_ml"), "levels", "value_error"),
    (procedure_performed(), _set("levels", []), "levels", "too_short"),
    (procedure_performed(), _set("procedure_type", "kyphoplasty"), "procedure_type", "enum"),
    (procedure_performed(), _set("indication", "tumour"), "indication", "enum"),
    (procedure_performed(), _set("anesthesia", "spinal"), "anesthesia", "enum"),
    (procedure_performed(), _set("neurological_deficit_at_presentation", "no"), "neurological_deficit_at_presentation", "bool_type"),
    (procedure_performed(), _set("operator_ref", "Dr Smith"), "operator_ref", "string_pattern_mismatch"),
    (procedure_performed(), _set("patient_name", "Jane Doe"), "patient_name", "extra_forbidden"),
    (procedure_performed(), _set("date_of_birth", "1970-01-01"), "date_of_birth", "extra_forbidden"),
    (procedure_performed(), _set("patient_ref", "MRN0012345"), "patient_ref", "uuid_parsing"),
    (procedure_performed(), _set("occurred_at", "2026-01-02T10:00:00"), "occurred_at", "timezone_aware"),
    (procedure_performed(), _set("site_id", "North Site"), "site_id", "string_pattern_mismatch"),
    (procedure_performed(), _set("schema_version", 2), "schema_version", "unsupported_schema_version"),
    (followup_recorded(), _set("vas", 11), "vas", "less_than_equal"),
    (followup_recorded(), _set("analgesic_use", "a lot more"), "analgesic_use", "enum"),
    (followup_recorded(), _set("timepoint", "week_2"), "timepoint", "enum"),
    (complication_reported(), _set("category", "bleeding"), "category", "enum"),
    (complication_reported(), _set("days_after_procedure", -1), "days_after_procedure", "greater_than_equal"),
    (event_retracted(), _set("reason", "because"), "reason", "enum"),
    (event_retracted(), _set("target_event_id", "not-a-uuid"), "target_event_id", "uuid_parsing"),
    (any_event, _set("event_type", "procedure.cancelled"), "event_type", "union_tag_invalid"),
    (any_event, _drop("event_type"), "event_type", "union_tag_not_found"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("strategy", "corrupt", "field", "code"),
    DEFECTS,
    ids=[f"{field}:{code}" for _, _, field, code in DEFECTS],
)
@settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_each_defect_is_reported_at_its_field(
    strategy: st.SearchStrategy[Event],
    corrupt: Callable[[Event], Event],
    field: str,
    code: str,
    data: st.DataObject,
) -> None:
    event = corrupt(copy.deepcopy(data.draw(strategy)))
    error = rejection(event)
    if code == "extra_forbidden":
        # An unknown name may identify someone: it is reported by its
        # 1-based position in the object, never by itself.
        assert field not in str(error)
        field = f"<field {list(event).index(field) + 1}>"
    assert (field, code) in {(e.location, e.code) for e in error.errors}, error


@given(payload=procedure_performed())
def test_histology_requires_a_biopsy(payload: Event) -> None:
    payload |= {"biopsy_taken": False, "histology": "hemangioma"}
    assert "histology" in locations(rejection(payload))


@given(payload=procedure_performed())
def test_leakage_on_an_unassessed_level_is_rejected(payload: Event) -> None:
    level = payload["levels"][0]
    level |= {
        "leakage_imaging": "not_assessed",
        "leakages": [{"site": "epidural", "symptomatic": True}],
    }
    assert "levels.0.leakages" in locations(rejection(payload))


@given(payload=procedure_performed())
def test_radiotherapy_injects_no_cement(payload: Event) -> None:
    payload["procedure_type"] = "radiotherapy"
    assert "levels" in locations(rejection(payload))


@given(payload=procedure_performed())
def test_a_vertebra_is_treated_once_per_procedure(payload: Event) -> None:
    payload["levels"] = payload["levels"][:1] * 2
    assert "levels" in locations(rejection(payload))


@given(payload=procedure_performed())
def test_raw_sf36_outside_its_domain_range_is_rejected(payload: Event) -> None:
    payload["pre_sf36"] = {
        "scale": "raw", "physical_functioning": 20, "role_physical": 6, "bodily_pain": 40,
        "general_health": 15, "vitality": 14, "social_functioning": 6, "role_emotional": 4,
        "mental_health": 20,
    }  # fmt: skip
    assert locations(rejection(payload)) == {"pre_sf36.bodily_pain"}


@given(payload=followup_recorded())
def test_final_followup_needs_days_since_procedure(payload: Event) -> None:
    payload["timepoint"] = "final"
    payload.pop("days_since_procedure", None)
    assert "days_since_procedure" in locations(rejection(payload))


@given(payload=followup_recorded())
def test_followup_must_measure_something(payload: Event) -> None:
    for name in ("vas", "sf36", "analgesic_use"):
        payload.pop(name, None)
    assert locations(rejection(payload)) == {"<root>"}


@given(payload=complication_reported())
def test_death_and_fatal_severity_go_together(payload: Event) -> None:
    payload |= {"category": "death", "severity": "severe"}
    assert "severity" in locations(rejection(payload))
    payload |= {"category": "infection", "severity": "fatal"}
    assert "severity" in locations(rejection(payload))


@given(payload=event_retracted())
def test_an_event_cannot_retract_itself(payload: Event) -> None:
    payload["target_event_id"] = payload["event_id"]
    assert "target_event_id" in locations(rejection(payload))


@given(payload=procedure_performed())
def test_failed_item_is_not_echoed_as_a_too_short_list(payload: Event) -> None:
    payload["levels"] = [dict(payload["levels"][0], vertebra="T13")]
    assert locations(rejection(payload)) == {"levels.0.vertebra"}


@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_anything_but_invalid_event(raw: bytes) -> None:
    with pytest.raises(InvalidEvent):
        parse_event(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(value=json_values)
def test_arbitrary_json_is_rejected_with_locations(value: object) -> None:
    error = rejection(json.dumps(value).encode())
    assert error.errors
    assert all(e.location and e.code and e.message for e in error.errors)


@given(payload=procedure_performed())
def test_error_messages_do_not_echo_offending_values(payload: Event) -> None:
    marker = "Jane-Q-Public-1970"
    payload |= {"patient_ref": marker, "site_id": marker, "operator_ref": marker}
    payload["levels"][0]["vertebra"] = marker
    error = rejection(payload)
    assert marker not in str(error)
    assert all(marker not in e.message for e in error.errors)


def test_contracts_carry_no_free_text() -> None:
    """Privacy by construction: every string on the wire is a UUID, a timestamp,
    an enumerated code or matches a restrictive pattern, so no name, MRN or
    birth date can travel in a free-text field."""
    loose: list[str] = []

    def walk(schema: dict[str, Any], path: str, defs: dict[str, Any]) -> None:
        if "$ref" in schema:
            walk(defs[schema["$ref"].split("/")[-1]], path, defs)
            return
        for key in ("anyOf", "allOf", "oneOf"):
            for option in schema.get(key, []):
                walk(option, path, defs)
        if schema.get("type") == "string" and not (
            "enum" in schema
            or "const" in schema
            or "pattern" in schema
            or schema.get("format") in ("uuid", "date-time")
        ):
            loose.append(path)
        for name, sub in schema.get("properties", {}).items():
            walk(sub, f"{path}.{name}", defs)
        if isinstance(schema.get("items"), dict):
            walk(schema["items"], f"{path}[]", defs)
        for sub in schema.get("prefixItems", []):
            walk(sub, f"{path}[]", defs)

    for event_type, model in EVENT_MODELS.items():
        schema = model.model_json_schema()
        walk(schema, event_type, schema.get("$defs", {}))
    assert loose == []


def test_forbidden_identifier_names_are_not_fields() -> None:
    forbidden = ("name", "mrn", "birth", "dob", "address", "phone", "email", "note", "comment")
    fields: list[str] = []

    def collect(model: type[Any]) -> None:
        for name, info in model.model_fields.items():
            fields.append(name)
            for arg in getattr(info.annotation, "__args__", ()) or (info.annotation,):
                inner = getattr(arg, "__args__", (arg,))
                for candidate in inner:
                    if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                        collect(candidate)

    for model in EVENT_MODELS.values():
        collect(model)
    assert "cement_volume_ml" in fields  # the walk reaches nested models
    assert [f for f in fields if any(word in f for word in forbidden)] == []


def test_procedure_model_is_strict() -> None:
    assert ProcedurePerformed.model_config.get("strict") is True
    assert ProcedurePerformed.model_config.get("extra") == "forbid"


# Keys a sender might make up: a space never occurs in a contract name.
made_up_names = st.text(min_size=1, max_size=30).map(lambda text: f"Jane {text}")


def _insert(target: Event, name: str, position: int) -> Event:
    """`target` with `name` added as its key number `position + 1`."""
    items = list(target.items())
    items.insert(position, (name, 1))
    return dict(items)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(payload=procedure_performed(), name=made_up_names, data=st.data())
def test_an_unknown_field_is_reported_by_its_position_never_by_its_name(
    payload: Event, name: str, data: st.DataObject
) -> None:
    nested = data.draw(st.booleans())
    target = payload["levels"][0] if nested else payload
    position = data.draw(st.integers(0, len(target)))
    if nested:
        payload["levels"][0] = _insert(target, name, position)
    else:
        payload = _insert(payload, name, position)
    raw = json.dumps(payload)
    error = rejection(raw.encode())
    where = f"<field {position + 1}>"
    assert [e.location for e in error.errors] == [f"levels.0.{where}" if nested else where]
    assert "withheld" in error.errors[0].message
    assert json.dumps(name)[1:-1] not in str(error)
    assert name not in str(error)


@given(payload=procedure_performed())
def test_a_known_name_in_the_wrong_place_is_named(payload: Event) -> None:
    payload["vas"] = 3  # a follow-up's field, not a procedure's
    payload["levels"][0]["hemangioma"] = 1  # a vocabulary value, not a field
    error = rejection(payload)
    assert locations(error) == {"vas", "levels.0.hemangioma"}
    assert all("withheld" not in e.message for e in error.errors)


def test_an_unknown_name_is_withheld_even_when_its_position_is_lost() -> None:
    err: Any = {"loc": ("procedure.performed", "Jane Doe"), "type": "extra_forbidden", "msg": "x"}
    error = _field_error(err, _Document(b"not json"))
    assert error.location == "<unknown field>"
    assert "Jane" not in str(error)
