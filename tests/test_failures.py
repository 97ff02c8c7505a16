"""The failure policy's pure parts: input bounds, reasons, and dead letters that fit."""

from __future__ import annotations

import hashlib
import json

import pytest

from spinewatch.contracts import Event
from spinewatch.domain.outcomes.facts import fact_of
from spinewatch.engine import ingest
from spinewatch.engine.ingest import IngestLimits, ingest_batch, triage
from spinewatch.errors import FieldError
from spinewatch.runtime.dead_letters import MessageOrigin, dead_letter, shrunk
from spinewatch.runtime.failures import (
    Action,
    FailurePolicy,
    InputLimits,
    RejectReason,
    Stage,
    nesting_depth,
)
from tests.test_domain import pathway

ORIGIN = MessageOrigin("events", 3, 41)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"", 0),
        (b"42", 0),
        (b"{}", 1),
        (b'[{"a":[1,{"b":"}}"}]}]', 4),  # brackets inside a string are not structure
        (b'{"a":"[[[[\\"[["}', 1),  # nor are they after an escaped quote
        (b'["a\\n",[[]]]', 3),  # an escaped letter does not swallow a bracket
        (b'"[[[[', 0),  # an unclosed string runs to the end
        (b"[[[", 3),  # unbalanced: counted by its openers
        (b"}}}", 0),
        (b"[" * 1500 + b"]" * 1500, 1500),
    ],
)
def test_nesting_depth_without_decoding(text: bytes, depth: int) -> None:
    assert nesting_depth(text) == depth


def _raw(index: int = 0) -> bytes:
    return pathway()[index].model_dump_json().encode()


def test_a_valid_bulk_message_is_far_from_the_depth_limit() -> None:
    bulk = b"[" + b",".join(_raw(i) for i in range(4)) + b"]"
    assert nesting_depth(bulk) <= 6 < InputLimits().max_nesting_depth


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 1500 + b"]" * 1500,  # killed the ingest agent with RecursionError
        b"[" * 33 + b"]" * 33,
        b'{"a":' * 40 + b"1" + b"}" * 40,
        b"[" + b'{"a":' * 40 + b"1" + b"}" * 40 + b"]",
    ],
)
def test_deep_nesting_has_a_reason_of_its_own(raw: bytes) -> None:
    result = triage(raw)
    assert not result.accepted
    (rejected,) = result.rejected
    assert rejected.reason is RejectReason.NESTING_TOO_DEEP
    assert rejected.raw == raw


def test_a_message_over_the_size_limit_is_not_decoded() -> None:
    limits = InputLimits(max_message_bytes=2048)
    big = b"[" + b",".join([_raw()] * 10) + b"]"
    assert len(big) > 2048
    (rejected,) = triage(big, limits).rejected
    assert rejected.reason is RejectReason.MESSAGE_TOO_LARGE
    assert "2048" in rejected.errors[0].message
    assert len(triage(_raw(), limits).accepted) == 1  # a normal event still passes


def test_an_empty_bulk_message_is_dead_lettered_not_dropped() -> None:
    for raw in (b"[]", b" [ ] "):
        (rejected,) = triage(raw).rejected
        assert rejected.reason is RejectReason.EMPTY_BATCH


def test_an_exception_for_one_event_dead_letters_that_event_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = pathway()
    doomed = events[1].event_id
    reduce = fact_of

    def failing_fact_of(event: Event) -> object:
        if event.event_id == doomed:
            raise KeyError("the secret value 7")
        return reduce(event)

    monkeypatch.setattr(ingest, "fact_of", failing_fact_of)
    bulk = b"[" + b",".join(e.model_dump_json().encode() for e in events) + b"]"
    result = ingest_batch([(bulk, ORIGIN), (events[1].model_dump_json().encode(), ORIGIN)])
    assert sum(result.accepted_by_type.values()) == len(events) - 1
    assert result.rejected_by_reason == {"internal_error": 2}
    bulk_letter, single_letter = result.dead_letters
    headers = dict(bulk_letter.headers)
    assert headers["spinewatch-reason"] == b"internal_error"
    assert headers["spinewatch-bulk-index"] == b"1"
    assert json.loads(bulk_letter.value)["event_id"] == str(doomed)
    (error,) = json.loads(headers["spinewatch-errors"])
    assert error["message"].startswith("processing raised KeyError")
    assert b"secret" not in headers["spinewatch-errors"]  # the type, never the text
    assert "spinewatch-bulk-index" not in dict(single_letter.headers)


def test_an_exception_in_triage_itself_dead_letters_the_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(raw: bytes, limits: InputLimits) -> object:
        raise RecursionError("deep")

    monkeypatch.setattr(ingest, "triage", broken)
    raw = _raw()
    result = ingest_batch([(raw, ORIGIN)])
    assert result.rejected_by_reason == {"internal_error": 1}
    assert result.dead_letters[0].value == raw


def test_a_dead_letter_fits_the_broker_and_identifies_its_original() -> None:
    original = b'{"junk": "' + b"x" * 1_200_000 + b'"}'
    errors = [FieldError(f"f{n}", "extra_forbidden", "m" * 1000) for n in range(50)]
    letter = dead_letter(original, errors, "schema_violation", ORIGIN, max_value_bytes=1000)
    headers = dict(letter.headers)
    assert letter.value == original[:1000]
    assert headers["spinewatch-truncated"] == b"true"
    assert headers["spinewatch-original-bytes"] == str(len(original)).encode()
    assert headers["spinewatch-original-sha256"] == hashlib.sha256(original).hexdigest().encode()
    assert headers["spinewatch-source-offset"] == b"41"
    listed = json.loads(headers["spinewatch-errors"])
    assert len(listed) == 20
    assert headers["spinewatch-errors-total"] == b"50"
    assert all(len(e["message"]) <= 300 for e in listed)
    size = len(letter.value) + sum(len(k) + len(v) for k, v in letter.headers)
    assert size < 20_000
    smaller = shrunk(letter, 100)
    assert smaller.value == original[:100]
    assert (
        dict(smaller.headers)["spinewatch-original-sha256"] == headers["spinewatch-original-sha256"]
    )


def test_a_small_dead_letter_keeps_its_payload_whole() -> None:
    letter = dead_letter(b"{oops", [], "invalid_json", ORIGIN)
    assert letter.value == b"{oops"
    assert dict(letter.headers)["spinewatch-truncated"] == b"false"


def test_ingest_limits_reach_the_dead_letters() -> None:
    limits = IngestLimits(InputLimits(max_message_bytes=4096), deadletter_max_value_bytes=512)
    big = b"{" + b" " * 5000 + b"}"
    (letter,) = ingest_batch([(big, ORIGIN)], limits).dead_letters
    assert len(letter.value) == 512
    assert dict(letter.headers)["spinewatch-reason"] == b"message_too_large"


def test_the_policy_dead_letters_input_and_retries_infrastructure() -> None:
    policy = FailurePolicy(retry_base_s=0.5, retry_max_s=4.0)
    assert policy.decide(Stage.TRIAGE, ValueError()) is Action.DEAD_LETTER
    assert policy.decide(Stage.APPLY, KeyError()) is Action.DEAD_LETTER
    assert policy.decide(Stage.WRITE, ConnectionError()) is Action.RETRY
    assert policy.decide(Stage.RECORD, TimeoutError()) is Action.RETRY
    assert policy.decide(Stage.TRIAGE, KeyboardInterrupt()) is Action.RAISE
    assert [policy.backoff_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
