"""PrivacyFilter: no identifier or payload reaches a log handler, at DEBUG.

Records go through the real root handler `configure_logging` installs (into
a StringIO), from the loggers faust and aiokafka really use.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
from aiokafka.structs import ConsumerRecord
from faust.events import Event
from faust.types.tuples import TP, FutureMessage, Message, PendingMessage
from pydantic import BaseModel, ValidationError

from spinewatch.runtime import log_privacy
from spinewatch.runtime.log_privacy import (
    MAX_MESSAGE_CHARS,
    PrivacyFilter,
    configure_logging,
)

PATIENT = uuid.uuid4()
PROCEDURE = uuid.uuid4()
NAME = "Jane Doe 1961-03-02"


def forms(canary: uuid.UUID) -> list[str]:
    """Every spelling of a UUID a log line could carry."""
    text = str(canary)
    return [text, text.upper(), canary.hex, canary.hex.upper()]


def assert_clean(text: str) -> None:
    for canary in (PATIENT, PROCEDURE):
        for form in forms(canary):
            assert form not in text, form
    assert NAME not in text


def payload() -> bytes:
    return json.dumps(
        {"patient_ref": str(PATIENT), "procedure_id": str(PROCEDURE), NAME: 1}
    ).encode()


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """The root logger at DEBUG through the privacy handler, restored afterwards."""
    root = logging.getLogger()
    level, before = root.level, list(root.handlers)
    stream = io.StringIO()
    handler = configure_logging("debug", stream)
    assert handler in root.handlers
    yield stream
    root.handlers[:] = before
    root.setLevel(level)
    for other in before:
        for installed in [f for f in other.filters if isinstance(f, PrivacyFilter)]:
            other.removeFilter(installed)


def test_uuids_in_arguments_are_redacted_in_every_form(log_text: io.StringIO) -> None:
    log = logging.getLogger("spinewatch.engine.outcomes")
    log.debug("patient %s procedure %r", PATIENT, str(PROCEDURE))
    log.debug("upper %s hex %s HEX %s", str(PATIENT).upper(), PATIENT.hex, PROCEDURE.hex.upper())
    log.debug("braced {%s} urn %s", PATIENT, PROCEDURE.urn)
    log.debug("mapping %(ref)s", {"ref": PATIENT})
    text = log_text.getvalue()
    assert_clean(text)
    assert text.count("<uuid>") == 8
    assert "braced <uuid> urn urn:uuid:<uuid>" in text


def test_bytes_arguments_print_their_size_only(log_text: io.StringIO) -> None:
    value = payload()
    # aiokafka's own debug line (aiokafka/producer/producer.py, send).
    logging.getLogger("aiokafka.producer.producer").debug(
        "Sending (key=%s value=%s) to %s", b"site-a", value, "events-0"
    )
    # faust's own debug line (faust/topics.py, publish_message).
    logging.getLogger("faust.topics").debug(
        "send: topic=%r k=%r v=%r timestamp=%r partition=%r",
        "events",
        bytearray(b"k"),
        memoryview(value),
        None,
        None,
    )
    text = log_text.getvalue()
    assert_clean(text)
    assert f"Sending (key=<6 bytes> value=<{len(value)} bytes>) to events-0" in text
    assert f"send: topic='events' k=<1 bytes> v=<{len(value)} bytes>" in text


def test_bytes_inside_containers_are_redacted(log_text: io.StringIO) -> None:
    headers = [("spinewatch-errors", payload()), ("spinewatch-reason", b"it's bad")]
    logging.getLogger("faust.agents").debug("headers %r", headers)
    text = log_text.getvalue()
    assert_clean(text)
    assert "[('spinewatch-errors', <bytes>), ('spinewatch-reason', <bytes>)]" in text


async def test_faust_and_aiokafka_messages_print_topic_partition_offset_only(
    log_text: io.StringIO,
) -> None:
    value = payload()
    message = Message("events", 2, 41, 0.0, 0, [("h", value)], b"key", value, None)
    pending = PendingMessage(None, b"key", value, 1, None, None, None, None, None, "facts")  # type: ignore[arg-type]
    record = ConsumerRecord("events", 3, 7, 0, 0, b"key", value, None, 3, len(value), [])
    log = logging.getLogger("faust.transport.consumer")
    log.debug("message %r", message)
    log.debug("event %r", Event(None, b"key", value, None, message))  # type: ignore[arg-type]
    log.debug("pending %r future %s", pending, FutureMessage(pending))
    logging.getLogger("aiokafka.consumer.fetcher").debug("record %s", record)
    text = log_text.getvalue()
    assert_clean(text)
    assert "message <Message topic=events partition=2 offset=41>" in text
    assert "event <Event topic=events partition=2 offset=41>" in text
    assert "pending <PendingMessage topic=facts partition=1> future <FutureMessage" in text
    assert "record <ConsumerRecord topic=events partition=3 offset=7>" in text
    assert TP("events", 2) == message.tp  # the summary names the real partition


def test_identifiers_in_prebuilt_messages_are_redacted(log_text: io.StringIO) -> None:
    log = logging.getLogger("spinewatch.engine.app")
    log.warning(f"held procedure {PROCEDURE} of patient {PATIENT.hex}")
    log.info("%s", f"raw payload {payload()!r}")
    text = log_text.getvalue()
    assert_clean(text)
    assert "held procedure <uuid> of patient <uuid>" in text


def _fails_on(patient_ref: str) -> None:
    procedure = PROCEDURE  # a local a traceback formatter could print
    raise ValueError(f"no procedure {procedure} for {patient_ref}: {payload()!r}")


def test_tracebacks_are_scrubbed(log_text: io.StringIO) -> None:
    log = logging.getLogger("faust.agents.agent")
    try:
        _fails_on(str(PATIENT).upper())
    except ValueError:
        log.exception("agent crashed on %s", PATIENT)
    text = log_text.getvalue()
    assert_clean(text)
    assert "Traceback (most recent call last)" in text
    assert "in _fails_on" in text
    assert "ValueError: no procedure <uuid> for <uuid>: <bytes>" in text


class _Contact(BaseModel):
    age: int


def test_pydantic_input_values_are_withheld(log_text: io.StringIO) -> None:
    try:
        _Contact.model_validate({"age": f"{NAME}, input_type=, {PATIENT}"})
    except ValidationError:
        logging.getLogger("spinewatch.alerting.service").exception("bad settings")
    text = log_text.getvalue()
    assert_clean(text)
    assert "input_value=<withheld>, input_type=str]" in text
    assert "age\n  Input should be a valid integer" in text


def test_stack_info_is_scrubbed(log_text: io.StringIO) -> None:
    record = logging.LogRecord("mode", logging.DEBUG, __file__, 1, "at", None, None)
    record.stack_info = f'Stack (most recent call last):\n  send(key="{PATIENT}")'
    logging.getLogger("mode").handle(record)
    text = log_text.getvalue()
    assert_clean(text)
    assert 'send(key="<uuid>")' in text


def test_a_bad_format_string_neither_raises_nor_leaks(log_text: io.StringIO) -> None:
    # Unfiltered, logging's handleError prints the raw msg and args to stderr.
    logging.getLogger("faust").debug("count %d of %s", str(PATIENT), payload())
    text = log_text.getvalue()
    assert_clean(text)
    assert "unformattable log message (TypeError): count %d of %s" in text


class _Raising:
    @property
    def key(self) -> bytes:
        raise RuntimeError(str(PATIENT))

    def __repr__(self) -> str:
        return f"<_Raising {PATIENT}>"


def test_an_object_that_raises_on_inspection_prints_its_type(log_text: io.StringIO) -> None:
    _Raising.__module__ = "faust.fake"  # looks like a faust message class
    logging.getLogger("faust").debug("odd %r", _Raising())
    text = log_text.getvalue()
    assert_clean(text)
    assert "odd <_Raising>" in text


def test_a_failing_filter_withholds_the_record(
    log_text: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(record: logging.LogRecord) -> None:
        raise RecursionError

    monkeypatch.setattr(log_privacy, "_scrub", broken)
    logging.getLogger("aiokafka").debug("value %s", payload())  # must not raise
    text = log_text.getvalue()
    assert_clean(text)
    assert "log record withheld: privacy filter failed (RecursionError)" in text


def test_long_messages_keep_their_head_and_say_what_was_cut(log_text: io.StringIO) -> None:
    logging.getLogger("aiokafka").debug("x" * 10_000)
    (line,) = log_text.getvalue().splitlines()
    assert "x" * MAX_MESSAGE_CHARS in line
    assert "x" * (MAX_MESSAGE_CHARS + 1) not in line
    assert f"[{10_000 - MAX_MESSAGE_CHARS} characters cut]" in line


def test_every_root_handler_is_filtered_and_a_second_call_replaces_the_first(
    log_text: io.StringIO,
) -> None:
    root = logging.getLogger()
    earlier = io.StringIO()
    other = logging.StreamHandler(earlier)
    root.addHandler(other)
    try:
        again = io.StringIO()
        configure_logging("debug", again)
        assert log_text not in [getattr(h, "stream", None) for h in root.handlers]
        logging.getLogger("faust").debug("patient %s", PATIENT)
        assert "patient <uuid>" in again.getvalue()
        assert "patient <uuid>" in earlier.getvalue()
    finally:
        root.removeHandler(other)


def test_records_below_the_level_are_not_formatted(log_text: io.StringIO) -> None:
    # The filter sits on handlers, so a record dropped by level costs nothing.
    configure_logging("info", log_text)
    formatted: list[str] = []

    class Spy:
        def __init__(self, name: str) -> None:
            self.name = name

        def __str__(self) -> str:
            formatted.append(self.name)
            return self.name

    logging.getLogger("aiokafka").debug("%s", Spy("debug"))
    logging.getLogger("aiokafka").info("%s", Spy("info"))
    assert set(formatted) == {"info"}
    assert log_text.getvalue().endswith("aiokafka: info\n")
