"""The exported event schemas are as strict as the engine, and the examples pass both.

Schema-valid means engine-valid: events generated from each committed
schema (tests/schema_values.py) and accepted by the real validator
(jsonschema, Draft 2020-12) are accepted by `parse_event` and reduced to a
fact, except for the residue each schema's description lists, which is
filtered here by its own rule, never by "the engine said no": a clinical
instant within a day of the range's bounds, and a retraction of itself.
The other residue items (integers written 5.0, a day that does not exist in
its month, `$` before a final newline in Python's re) are not generated.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, ValidationError

from spinewatch.contracts import EVENT_MODELS, parse_event
from spinewatch.contracts.base import (
    CLINICAL_DATE_OUT_OF_RANGE,
    CLINICAL_EPOCH,
    CLINICAL_HORIZON,
)
from spinewatch.contracts.envelope import ENVELOPE_RESIDUE
from spinewatch.contracts.export import schema_file_name
from spinewatch.contracts.schema_rules import ENGINE_ONLY_HEADING
from spinewatch.domain.outcomes.facts import fact_of
from spinewatch.errors import InvalidEvent
from tests.schema_values import JsonValues

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas" / "json-schema"
EXAMPLES = ROOT / "schemas" / "examples"

Event = dict[str, Any]
Verdict = set[tuple[str, str]]  # (field, code) of every error; empty: accepted


def _schema(event_type: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SCHEMAS / schema_file_name(event_type)).read_text())
    return document


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


# --- generation -------------------------------------------------------------------------


@st.composite
def clinical_instants(draw: st.DrawFn) -> str:
    """RFC 3339 instants as senders write them, around and inside the clinical range.

    A third of them come from two days either side of a bound, where the
    UTC offset decides (the residue); the rest from the whole range.
    """
    days = timedelta(days=2)
    whole = (CLINICAL_EPOCH, CLINICAL_HORIZON)
    band = draw(
        st.sampled_from(
            [
                (CLINICAL_EPOCH - days, CLINICAL_EPOCH + days),
                (CLINICAL_HORIZON - days, CLINICAL_HORIZON + days),
                *[whole] * 4,
            ]
        )
    )
    naive = [bound.replace(tzinfo=None) for bound in band]
    moment = draw(st.datetimes(naive[0], naive[1])).replace(tzinfo=UTC)
    offset = timedelta(minutes=draw(st.integers(-(24 * 60 - 1), 24 * 60 - 1)))
    local = moment.astimezone(timezone(offset))
    text = local.isoformat(timespec=draw(st.sampled_from(["seconds", "milliseconds", "auto"])))
    if not offset:
        text = text.removesuffix("+00:00") + draw(st.sampled_from(["Z", "z", "+00:00", "-00:00"]))
    return text.replace("T", draw(st.sampled_from("Tt")), 1)


UUIDS = st.uuids().flatmap(lambda u: st.sampled_from([str(u), str(u).upper()]))
FORMATS = {"date-time": clinical_instants(), "uuid": UUIDS}


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.upper())


def residue(event: Event) -> Verdict:
    """The engine's verdict on an event for the rules the schema cannot state."""
    expected: Verdict = set()
    for field in ("occurred_at", "recorded_at"):
        if not CLINICAL_EPOCH <= _instant(event[field]) < CLINICAL_HORIZON:
            expected.add((field, CLINICAL_DATE_OUT_OF_RANGE))
    if "target_event_id" in event and UUID(event["target_event_id"]) == UUID(event["event_id"]):
        expected.add(("target_event_id", "value_error"))
    return expected


def engine_verdict(event: Event) -> Verdict:
    try:
        parsed = parse_event(json.dumps(event))
    except InvalidEvent as exc:
        return {(error.location, error.code) for error in exc.errors}
    fact_of(parsed)  # an exception here would be dead-lettered as internal_error
    return set()


def _conditions(node: Any) -> Iterator[dict[str, Any]]:
    """Every `if` in a schema, wherever it sits."""
    if isinstance(node, dict):
        if "if" in node:
            yield node["if"]
        for value in node.values():
            yield from _conditions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _conditions(item)


def _objects(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _objects(item)
    elif isinstance(value, list):
        for item in value:
            yield from _objects(item)


# About 2-5 s per event type on a quiet machine; derandomized so that the
# reach check below (every conditional rule's `then` exercised) cannot flake.
STRICTNESS = settings(
    max_examples=150,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("event_type", sorted(EVENT_MODELS))
def test_schema_valid_events_are_engine_valid_apart_from_the_listed_residue(
    event_type: str,
) -> None:
    schema = _schema(event_type)
    validator = _validator(schema)
    conditions = [Draft202012Validator(c) for c in _conditions(schema)]
    held = [0] * len(conditions)
    seen = {"events": 0, "residue": 0}

    @STRICTNESS
    @given(event=JsonValues(schema, FORMATS).values().filter(validator.is_valid))
    def schema_valid_is_engine_valid(event: Event) -> None:
        expected = residue(event)
        assert engine_verdict(event) == expected, json.dumps(event)
        seen["events"] += 1
        seen["residue"] += bool(expected)
        for index, condition in enumerate(conditions):
            held[index] += any(condition.is_valid(node) for node in _objects(event))

    schema_valid_is_engine_valid()
    # Reach: every conditional rule held for some generated event, so its
    # `then` was generated and checked against the engine, not only its `else`.
    assert all(held), [c.schema for c, n in zip(conditions, held, strict=True) if not n]
    assert seen["events"] >= 100
    assert seen["residue"] < seen["events"] // 2  # most examples test real rules


class _DeadLetter(Exception):
    """What the engine would make of a generated event."""


def _rule_holders(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The event schema and each of its definitions that carry rules, by name."""
    defs = schema.get("$defs", {})
    holders = {"event": schema} | {name: defs[name] for name in sorted(defs)}
    return {name: holder for name, holder in holders.items() if holder.get("allOf")}


EVERY_RULE = [
    (event_type, holder, index)
    for event_type in sorted(EVENT_MODELS)
    for holder, node in _rule_holders(_schema(event_type)).items()
    for index in range(len(node["allOf"]))
]


@pytest.mark.parametrize(
    ("event_type", "holder", "index"), EVERY_RULE, ids=[f"{t}:{h}:{i}" for t, h, i in EVERY_RULE]
)
def test_without_any_one_rule_generation_finds_a_dead_letter(
    event_type: str, holder: str, index: int
) -> None:
    """The property has teeth: each rule, dropped alone, lets through what the engine rejects.

    So every rule is needed, and the generator reaches each one.
    """
    weakened = _schema(event_type)
    _rule_holders(weakened)[holder]["allOf"].pop(index)
    validator = _validator(weakened)

    # Stops at the first dead letter: no shrinking, only generation.
    @settings(
        max_examples=400,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(event=JsonValues(weakened, FORMATS).values().filter(validator.is_valid))
    def generate(event: Event) -> None:
        if not residue(event) and (verdict := engine_verdict(event)):
            raise _DeadLetter(sorted(verdict))

    with pytest.raises(_DeadLetter):
        generate()


def test_the_sweep_covers_every_cross_field_rule() -> None:
    counts = {t: sum(1 for rule in EVERY_RULE if rule[0] == t) for t in sorted(EVENT_MODELS)}
    # procedure: unique vertebrae, PVP/PKP levels, no cement, histology; SF-36
    # raw ranges; the level's leakage imaging and unique sites. follow-up:
    # placed timepoints, something measured, no version 2 field in version 1;
    # SF-36. complication: death/fatal.
    assert counts == {
        "complication.reported": 1,
        "event.retracted": 0,
        "followup.recorded": 4,
        "procedure.performed": 7,
    }


# --- each rule, both sides ----------------------------------------------------------------


def _example(name: str) -> Event:
    event: Event = json.loads((EXAMPLES / name).read_text())
    return event


def _pkp_without_approach_and_cement(event: Event) -> None:
    del event["levels"][0]["approach"], event["levels"][0]["cement_volume_ml"]


def _radiotherapy_with_cement(event: Event) -> None:
    event["procedure_type"] = "radiotherapy"


def _leakage_on_an_unassessed_level(event: Event) -> None:
    event["levels"][0]["leakage_imaging"] = "not_assessed"


def _a_vertebra_twice(event: Event) -> None:
    event["levels"].append(copy.deepcopy(event["levels"][0]) | {"cement_volume_ml": 2.0})


def _a_leakage_site_twice(event: Event) -> None:
    leak = event["levels"][0]["leakages"][0]
    event["levels"][0]["leakages"].append(leak | {"volume_ml": 0.1})


def _histology_without_biopsy(event: Event) -> None:
    event["biopsy_taken"] = False


def _raw_sf36_out_of_its_domain_range(event: Event) -> None:
    event["pre_sf36"]["bodily_pain"] = 20


def _final_followup_without_days(event: Event) -> None:
    event["timepoint"] = "final"
    del event["days_since_procedure"]


def _followup_measuring_nothing(event: Event) -> None:
    for measure in ("vas", "sf36", "analgesic_use"):
        event.pop(measure)
    event["vas"] = None


def _version_2_field_in_version_1(event: Event) -> None:
    event["schema_version"] = 1


def _death_not_fatal(event: Event) -> None:
    event["category"] = "death"


def _fatal_not_death(event: Event) -> None:
    event["severity"] = "fatal"


def _year_out_of_range(event: Event) -> None:
    event["occurred_at"] = "2204-03-04T09:15:00+01:00"


def _leap_second(event: Event) -> None:
    event["recorded_at"] = "2016-12-31T23:59:60Z"


def _a_uuid_without_hyphens(event: Event) -> None:
    event["patient_ref"] = event["patient_ref"].replace("-", "")


# (example, corruption, where the schema reports it, what the engine reports)
RULES = [
    ("procedure.performed.pkp.json", _pkp_without_approach_and_cement, ["levels", 0], "levels"),
    ("procedure.performed.pvp.json", _radiotherapy_with_cement, ["levels", 0, "cement_volume_ml"],
     "levels"),
    ("procedure.performed.pkp.json", _leakage_on_an_unassessed_level,
     ["levels", 0, "leakage_imaging"], "levels.0.leakages"),
    ("procedure.performed.pvp.json", _a_vertebra_twice, ["levels"], "levels"),
    ("procedure.performed.pkp.json", _a_leakage_site_twice, ["levels", 0, "leakages"],
     "levels.0.leakages"),
    ("procedure.performed.pvp.json", _histology_without_biopsy, ["biopsy_taken"], "histology"),
    ("procedure.performed.pvp.json", _raw_sf36_out_of_its_domain_range,
     ["pre_sf36", "bodily_pain"], "pre_sf36.bodily_pain"),
    ("followup.recorded.json", _final_followup_without_days, [], "days_since_procedure"),
    ("followup.recorded.json", _followup_measuring_nothing, [], "<root>"),
    ("followup.recorded.v2.json", _version_2_field_in_version_1, ["neurological_status"],
     "neurological_status"),
    ("complication.reported.json", _death_not_fatal, ["severity"], "severity"),
    ("complication.reported.json", _fatal_not_death, ["severity"], "severity"),
    ("procedure.performed.pkp.json", _year_out_of_range, ["occurred_at"], "occurred_at"),
    ("followup.recorded.json", _leap_second, ["recorded_at"], "recorded_at"),
    ("event.retracted.json", _a_uuid_without_hyphens, ["patient_ref"], None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("example", "corrupt", "schema_path", "engine_field"),
    RULES,
    ids=[corrupt.__name__.strip("_") for _, corrupt, _, _ in RULES],
)
def test_the_schema_and_the_engine_reject_each_rule_at_its_field(
    example: str, corrupt: Any, schema_path: list[str | int], engine_field: str | None
) -> None:
    event = _example(example)
    corrupt(event)
    errors = list(_validator(_schema(event["event_type"])).iter_errors(event))
    assert errors, "the schema accepted it"
    # A nullable field reports "not valid under any of the given schemas" at
    # its own path; the branch that explains why sits in the error's context.
    paths = [list(error.absolute_path) for error in _with_context(errors)]
    assert schema_path in paths, [(list(e.absolute_path), e.message) for e in errors]
    verdict = engine_verdict(event)
    if engine_field is None:  # the engine reads more spellings than the schema allows
        assert verdict == set()
    else:
        assert engine_field in {field for field, _ in verdict}, verdict


def _with_context(errors: list[ValidationError]) -> Iterator[ValidationError]:
    for error in errors:
        yield error
        yield from _with_context(list(error.context or []))


def test_the_pkp_from_issue_17_fails_the_schema_where_the_engine_fails_it() -> None:
    """A PKP whose level lacks approach and cement volume passed the schema (0 errors)."""
    event = _example("procedure.performed.pkp.json")
    _pkp_without_approach_and_cement(event)
    errors = list(_validator(_schema("procedure.performed")).iter_errors(event))
    assert sorted(
        (list(error.absolute_path), error.validator, error.message) for error in errors
    ) == [
        (["levels", 0], "required", "'approach' is a required property"),
        (["levels", 0], "required", "'cement_volume_ml' is a required property"),
    ]
    with pytest.raises(InvalidEvent) as caught:
        parse_event(json.dumps(event))
    assert [(e.location, e.code) for e in caught.value.errors] == [("levels", "value_error")]
    assert "lacks approach, cement_volume_ml" in caught.value.errors[0].message


def test_a_retraction_of_itself_is_the_documented_residue() -> None:
    event = _example("event.retracted.json")
    event["target_event_id"] = event["event_id"]
    schema = _schema("event.retracted")
    assert _validator(schema).is_valid(event)  # JSON Schema cannot compare two fields
    assert engine_verdict(event) == {("target_event_id", "value_error")}
    assert "target_event_id differs from event_id" in schema["description"]


@pytest.mark.parametrize("event_type", sorted(EVENT_MODELS))
def test_every_event_schema_lists_its_residue(event_type: str) -> None:
    description = _schema(event_type)["description"]
    assert ENGINE_ONLY_HEADING in description
    for rule in ENVELOPE_RESIDUE:
        assert f"- {rule}" in description


# --- the examples -------------------------------------------------------------------------


def _example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.json"))


def test_every_example_passes_its_schema_and_the_engine() -> None:
    events = [json.loads(path.read_text()) for path in _example_files()]
    assert {event["event_type"] for event in events} == set(EVENT_MODELS)
    assert {e["procedure_type"] for e in events if "procedure_type" in e} == {"pvp", "pkp"}
    for path, event in zip(_example_files(), events, strict=True):
        assert list(_validator(_schema(event["event_type"])).iter_errors(event)) == [], path
        assert engine_verdict(event) == set(), path


def test_the_event_stream_strings_the_examples_together() -> None:
    lines = (EXAMPLES / "events.jsonl").read_text().splitlines()
    stream = [json.loads(line) for line in lines]
    for event in stream:
        assert list(_validator(_schema(event["event_type"])).iter_errors(event)) == []
        assert engine_verdict(event) == set()
    by_id = {event["event_id"]: event for event in stream}
    assert len(by_id) == len(stream)
    for path in _example_files():
        example = json.loads(path.read_text())
        assert by_id[example["event_id"]] == example, path
    procedures = {e["procedure_id"]: e for e in stream if e["event_type"] == "procedure.performed"}
    for event in stream:  # every event belongs to a procedure of the stream, and its patient
        assert procedures[event["procedure_id"]]["patient_ref"] == event["patient_ref"]
        if event["event_type"] == "event.retracted":  # ... and retracts another of them
            target = by_id[event["target_event_id"]]
            assert target["procedure_id"] == event["procedure_id"]


def test_the_readme_names_every_example() -> None:
    readme = (ROOT / "README.md").read_text()
    for path in [*_example_files(), EXAMPLES / "events.jsonl"]:
        assert path.name in readme, path.name
