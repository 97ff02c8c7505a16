"""Logs that cannot carry patient or procedure identifiers, at any level.

Measured before this filter existed: a worker at `log_level=debug` wrote
2,551 of 2,551 dead-letter payloads, patient refs and procedure ids
included, to its log. Two third-party debug lines log every send in full:
faust's `send: topic=%r k=%r v=%r ...` (faust/topics.py, `publish_message`)
and aiokafka's `Sending (key=%s value=%s) to %s` (aiokafka/producer/
producer.py, `send`); aiokafka.conn also prints whole requests and
responses, `ProduceRequest_v7(... messages=bytearray(b'...'))` among them.
Measured again by tests/test_log_privacy_e2e.py with this filter switched
off: all 1,000 procedure ids (raw 16-byte keys inside printed fact
batches), every id of the 4 dead-lettered messages and an unknown field's
name reached the log. spinewatch's own code logs counts and partitions
only, but it does not control what faust, mode and aiokafka log, nor what
an exception's text holds (pydantic's `ValidationError` prints
`input_value=...` for every error).

`PrivacyFilter` sits on the root logger's handlers (`configure_logging`
puts it there), so it sees every record that is emitted, from any logger:
a filter on a logger would not see records propagated from its children.
It rewrites each record before any formatter runs:

- bytes, bytearray and memoryview arguments become `<N bytes>`: message
  keys and values are bytes, and every payload is one;
- faust and aiokafka message-like arguments (faust `Message`,
  `PendingMessage`, `FutureMessage`, `Event`; aiokafka `ConsumerRecord`,
  record classes) become `<Type topic=... partition=... offset=...>`:
  `Event.__repr__` and the `ConsumerRecord` dataclass repr print key and
  value;
- then, on the formatted text (message, traceback, stack): every UUID
  (8-4-4-4-12 in any case, with or without braces, and the 32-hex-digit
  form; longer hex runs too) becomes `<uuid>` (or `<hex>`), since
  `patient_ref` and `procedure_id` are UUIDs by contract, wherever the text
  came from (an f-string, an exception, a container's repr); a Python
  bytes literal (`b'...'`, as in a list of headers) becomes `<bytes>`; a
  pydantic `input_value=...` becomes `input_value=<withheld>`;
- a message longer than 2,000 characters keeps its head and says how much
  was cut; a traceback longer than 20,000 keeps its tail (the exception).

Handler filters run only for records that pass the level checks, so a
dropped debug record costs nothing here. Handlers added to the root
logger after `configure_logging` do not get the filter: add it to them.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from types import TracebackType
from typing import Any, Final, TextIO

from spinewatch.runtime.log_repeats import RepeatLimit

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_MESSAGE_CHARS: Final = 2000
MAX_TRACEBACK_CHARS: Final = 20000

_HEX = "0-9a-fA-F"
_CANONICAL_UUID = re.compile(
    rf"\{{?(?<![{_HEX}])[{_HEX}]{{8}}-[{_HEX}]{{4}}-[{_HEX}]{{4}}-[{_HEX}]{{4}}-[{_HEX}]{{12}}"
    rf"(?![{_HEX}])\}}?"
)
# 32 hex digits is `uuid.hex`; a longer run may hold one (two ids glued).
_HEX_RUN = re.compile(rf"(?<![{_HEX}])[{_HEX}]{{32,}}(?![{_HEX}])")
_BYTES_LITERAL = re.compile(r"""(?<!\w)b(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")""")
# pydantic: `[type=int_type, input_value='abc', input_type=str]`. Greedy to
# the line's last `, input_type=`: a crafted value cannot end the match early.
_INPUT_VALUE = re.compile(r"input_value=(?:.*(?=, input_type=)|.*)")

# Third-party packages whose message-like objects print keys and values.
_MESSAGE_MODULES: Final = ("faust.", "aiokafka.")
_SCRUBBED: Final = "_spinewatch_scrubbed"


class _Placeholder(str):
    """Text that prints the same under `%s` and `%r` (no quotes added)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def scrub_text(text: str) -> str:
    """Redact identifiers and payload fragments from formatted log text."""
    text = _CANONICAL_UUID.sub("<uuid>", text)
    text = _HEX_RUN.sub(lambda m: "<uuid>" if len(m.group()) == 32 else "<hex>", text)
    text = _BYTES_LITERAL.sub("<bytes>", text)
    return _INPUT_VALUE.sub("input_value=<withheld>", text)


def safe_arg(value: object) -> object:
    """A log argument that cannot print a payload: bytes and messages summarised."""
    if isinstance(value, bytes | bytearray):
        return _Placeholder(f"<{len(value)} bytes>")
    if isinstance(value, memoryview):
        return _Placeholder(f"<{value.nbytes} bytes>")
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if type(value).__module__.startswith(_MESSAGE_MODULES):
        try:
            if _is_message_like(value):
                return _Placeholder(_summary(value))
        except Exception:  # a property that raises: print the type only
            return _Placeholder(f"<{type(value).__name__}>")
    return value


def _is_message_like(value: object) -> bool:
    # Duck-typed so the filter need not import faust (the alerting service
    # does not load it): Message, PendingMessage, Event and ConsumerRecord
    # have key and value; FutureMessage and Event wrap a `message`.
    return (hasattr(value, "key") and hasattr(value, "value")) or hasattr(value, "message")


def _summary(value: object) -> str:
    inner = getattr(value, "message", None)
    source = value if inner is None else inner
    parts = [type(value).__name__]
    for name in ("topic", "partition", "offset"):
        part = getattr(source, name, None)
        if isinstance(part, str | int) and not isinstance(part, bool):
            parts.append(f"{name}={scrub_text(str(part))}")
    return "<" + " ".join(parts) + ">"


def _bounded_head(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]} ... [{len(text) - limit} characters cut]"


def _bounded_tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"[{len(text) - limit} characters cut] ... {text[-limit:]}"


def _format_exception(
    exc_info: tuple[type[BaseException], BaseException, TracebackType | None],
) -> str:
    return "".join(traceback.format_exception(*exc_info)).rstrip("\n")


class PrivacyFilter(logging.Filter):
    """Rewrites every record so no identifier or payload reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SCRUBBED, False):
            return True
        try:
            _scrub(record)
        except Exception as exc:
            # Never raise into the caller (a faust agent), and never pass the
            # raw record on: logging's handleError would print msg and args.
            record.msg = f"log record withheld: privacy filter failed ({type(exc).__name__})"
            record.args = None
            record.exc_info = record.exc_text = record.stack_info = None
        setattr(record, _SCRUBBED, True)
        return True


def _scrub(record: logging.LogRecord) -> None:
    record.args = _safe_args(record.args)
    try:
        message = record.getMessage()
    except Exception as exc:
        # A bad format string: logging would print msg and args raw.
        message = f"unformattable log message ({type(exc).__name__}): {record.msg!s}"
    record.msg = _bounded_head(scrub_text(message), MAX_MESSAGE_CHARS)
    record.args = None
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = record.exc_text or _format_exception(record.exc_info)
    if record.exc_text:
        record.exc_text = _bounded_tail(scrub_text(record.exc_text), MAX_TRACEBACK_CHARS)
    # The traceback holds frames whose locals may be payloads; formatters
    # append the scrubbed exc_text without it.
    record.exc_info = None
    if record.stack_info:
        record.stack_info = scrub_text(record.stack_info)


def _safe_args(args: Any) -> Any:
    if isinstance(args, tuple):
        return tuple(safe_arg(arg) for arg in args)
    if isinstance(args, dict):
        return {key: safe_arg(value) for key, value in args.items()}
    return args


def configure_logging(level: str, stream: TextIO | None = None) -> logging.Handler:
    """Log to stderr at `level`, through `PrivacyFilter`, for every logger.

    Third-party warnings that repeat are limited (`RepeatLimit`).

    Used by the worker, the alerting service and the demo. Replaces a
    handler installed by an earlier call, and adds the filter to any other
    handler already on the root logger.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _PrivateStreamHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _PrivateStreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    # Before the privacy filter: a withheld repeat costs no scrubbing.
    handler.addFilter(RepeatLimit())
    root.addHandler(handler)
    for other in root.handlers:
        if not any(isinstance(f, PrivacyFilter) for f in other.filters):
            other.addFilter(PrivacyFilter())
    root.setLevel(level.upper())
    return handler


class _PrivateStreamHandler(logging.StreamHandler[TextIO]):
    """The handler `configure_logging` installs (so a second call replaces it)."""
