"""`spinewatch validate`: check a file of events exactly as the engine's ingest would.

The unit is the engine's, one message value of the events topic: a JSON
event, or a JSON array of events (the bulk path). A file holds one such
message, on one line or pretty-printed over many (an example event, a
replay batch), or JSON Lines, one message per line (each line an event or
an array). Each message goes through the worker's own `triage` with its
default bounds (8 MiB, 32 levels of nesting), and each accepted event
through `fact_of`, as `ingest_batch` does: what this command accepts is
what the worker counts, and every rejection is the dead letter it would
write, with the same reason and field-level errors. The errors name
fields, never values (`contracts/registry.py`).

Output: one JSON line per dead letter on stdout, `{"line", "index",
"reason", "errors": [{"field", "code", "message"}]}` (`line`: where the
message starts in the file; `index`: the item's position in a JSON array,
as the engine's `spinewatch-bulk-index` header, else null), and a count on
stderr. Exit 0 when everything is valid, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

from pydantic_core import from_json

from spinewatch.domain.outcomes.facts import fact_of
from spinewatch.engine.ingest import triage
from spinewatch.errors import FieldError
from spinewatch.runtime.failures import RejectReason, internal_error


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What the engine would dead-letter, and where it sits in the file."""

    line: int
    index: int | None
    reason: str
    errors: tuple[FieldError, ...]

    def as_json(self) -> str:
        errors = [{"field": e.location, "code": e.code, "message": e.message} for e in self.errors]
        document = {"line": self.line, "index": self.index, "reason": self.reason}
        return json.dumps(document | {"errors": errors})


@dataclass(slots=True)
class Report:
    messages: int = 0
    valid: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)


def messages_of(data: bytes) -> list[tuple[int, bytes]]:
    """The file's messages, each with the line it starts on (1-based)."""
    lines = data.splitlines()
    starts = [number for number, line in enumerate(lines, start=1) if line.strip()]
    if not starts:
        return []
    # One message when the file is one JSON value. Otherwise JSON Lines if
    # some line is a whole event or array on its own, which no line of a
    # pretty-printed event is ("{", "  \"vas\": 2,"): a broken pretty-printed
    # file is then one invalid message, not one error per line.
    if len(starts) == 1 or _is_json(data):
        return [(starts[0], data)]
    if any(_is_a_message(lines[number - 1]) for number in starts):
        return [(number, lines[number - 1]) for number in starts]
    return [(starts[0], data)]


def _is_a_message(line: bytes) -> bool:
    return line.lstrip()[:1] in (b"{", b"[") and _is_json(line)


def _is_json(raw: bytes) -> bool:
    try:
        # pydantic-core's parser stops at 200 levels of nesting by itself;
        # an unbounded decoder could recurse into a RecursionError here.
        from_json(raw)
    except ValueError:
        return False
    return True


def check(data: bytes) -> Report:
    report = Report()
    for line, raw in messages_of(data):
        report.messages += 1
        triaged = triage(raw)
        for rejected in triaged.rejected:
            report.dead_letters.append(
                DeadLetter(line, rejected.index, rejected.reason.value, rejected.errors)
            )
        for event, index in triaged.accepted:
            # As ingest_batch: an event the engine cannot reduce to a fact is
            # dead-lettered as internal_error, so it is not valid here either.
            try:
                fact_of(event)
            except Exception as exc:  # reported as the engine does, by type only
                error = internal_error(exc)
                reason = RejectReason.INTERNAL_ERROR.value
                report.dead_letters.append(DeadLetter(line, index, reason, (error,)))
            else:
                report.valid += 1
    return report


def run_validate(path: str, out: TextIO, err: TextIO, stdin: BinaryIO | None = None) -> int:
    if path == "-":
        data = (stdin or sys.stdin.buffer).read()
    else:
        with open(path, "rb") as handle:
            data = handle.read()
    report = check(data)
    for letter in report.dead_letters:
        print(letter.as_json(), file=out)
    plural = "" if report.messages == 1 else "s"
    print(
        f"{report.valid} valid, {len(report.dead_letters)} invalid "
        f"in {report.messages} message{plural}",
        file=err,
    )
    return 1 if report.dead_letters else 0
