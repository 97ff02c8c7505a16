"""Follow-up schema version 2: compatible with version 1, strict at each new field.

Version 2 adds `neurological_status` and `pain_relief` (closed
vocabularies, seeds 001/002/004). Version 1 events stay valid for the engine
and the exported schema; a version 1 event carrying a new field, or a value
outside the vocabulary, fails at that field and never has its value echoed;
fact batches written before the new fields existed still decode.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from jsonschema import Draft202012Validator

from spinewatch.adapters.state_codec import FORMAT_VERSION, decode_facts
from spinewatch.contracts import (
    FollowupRecorded,
    NeurologicalStatus,
    PainRelief,
    parse_event,
)
from spinewatch.contracts.export import schema_file_name
from spinewatch.domain.outcomes.facts import FollowupFact, fact_of
from spinewatch.errors import InvalidEvent

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "schemas" / "examples"
SCHEMA = json.loads(
    (ROOT / "schemas" / "json-schema" / schema_file_name("followup.recorded")).read_text()
)
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)

Event = dict[str, Any]


def _example(name: str) -> Event:
    event: Event = json.loads((EXAMPLES / name).read_text())
    return event


def _followup(event: Event) -> FollowupRecorded:
    parsed = parse_event(json.dumps(event))
    assert isinstance(parsed, FollowupRecorded)
    return parsed


def _errors(event: Event) -> list[tuple[str, str, str]]:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(json.dumps(event))
    return [(e.location, e.code, e.message) for e in caught.value.errors]


# --- the contract ---------------------------------------------------------------------


def test_version_1_follow_ups_stay_valid_for_the_engine_and_the_schema() -> None:
    event = _example("followup.recorded.json")
    assert event["schema_version"] == 1
    assert "pain_relief" not in event
    parsed = _followup(event)
    assert (parsed.schema_version, parsed.neurological_status, parsed.pain_relief) == (
        1,
        None,
        None,
    )
    assert VALIDATOR.is_valid(event)


def test_version_2_carries_neurological_status_and_pain_relief() -> None:
    event = _example("followup.recorded.v2.json")
    parsed = _followup(event)
    assert parsed.schema_version == 2
    assert parsed.neurological_status is NeurologicalStatus(event["neurological_status"])
    assert parsed.pain_relief is PainRelief(event["pain_relief"])
    assert VALIDATOR.is_valid(event)
    # Either alone is a measurement: a visit may record only pain relief.
    only = {k: v for k, v in event.items() if k not in ("vas", "analgesic_use")}
    del only["neurological_status"]
    assert _followup(only).pain_relief is PainRelief(event["pain_relief"])
    assert VALIDATOR.is_valid(only)


@pytest.mark.parametrize("field", ["neurological_status", "pain_relief"])
def test_a_version_1_event_with_a_version_2_field_fails_at_that_field(field: str) -> None:
    event = _example("followup.recorded.v2.json") | {"schema_version": 1}
    other = next(f for f in ("neurological_status", "pain_relief") if f != field)
    del event[other]
    sent = event[field]
    ((location, code, message),) = _errors(event)
    assert (location, code) == (field, "needs_schema_version_2")
    assert sent not in message  # the value is never echoed
    schema_errors = list(VALIDATOR.iter_errors(event))
    assert [list(e.absolute_path) for e in schema_errors] == [[field]]


def test_a_value_outside_the_vocabulary_fails_at_its_field_without_echo() -> None:
    identifying = "Jane Doe 1961-03-02 recovered"
    for field in ("neurological_status", "pain_relief"):
        event = _example("followup.recorded.v2.json") | {field: identifying}
        ((location, code, message),) = _errors(event)
        assert (location, code) == (field, "enum")
        assert "Jane" not in message
        assert not VALIDATOR.is_valid(event)


def test_an_unread_version_lists_the_versions_read_per_event_type() -> None:
    followup = _example("followup.recorded.json") | {"schema_version": 3}
    ((location, code, message),) = _errors(followup)
    assert (location, code) == ("schema_version", "unsupported_schema_version")
    assert message.endswith("versions 1, 2 of followup.recorded")
    assert not VALIDATOR.is_valid(followup)
    procedure = _example("procedure.performed.pvp.json") | {"schema_version": 2}
    ((location, code, message),) = _errors(procedure)
    assert (location, code) == ("schema_version", "unsupported_schema_version")
    assert message.endswith("reads version 1")


def test_a_fact_batch_written_before_version_2_still_decodes() -> None:
    fact = fact_of(parse_event((EXAMPLES / "followup.recorded.json").read_bytes()))
    assert isinstance(fact, FollowupFact)
    # What the previous release wrote: the follow-up fact without its three
    # trailing fields (msgpack array: tag, then the fields in order).
    old = msgspec.msgpack.encode((FORMAT_VERSION, [(b"p" * 16, fact)]))
    as_lists = msgspec.msgpack.decode(old)
    as_lists[1][0][1] = as_lists[1][0][1][:-3]
    ((_, decoded),) = decode_facts(msgspec.msgpack.encode(as_lists))
    # The old fact knew no days since procedure either: the visit is then
    # ordered by its timepoint's nominal day.
    assert decoded == msgspec.structs.replace(fact, days_since_procedure=None)
