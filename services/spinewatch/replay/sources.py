"""Input files of a replay: which format each is, and its records in a fixed order.

Formats (`--format`, or chosen from the file):

    jsonl   JSON Lines (.jsonl, .ndjson): one event per line, blank lines
            skipped; a record's position is its line number
    json    one JSON document (.json): an event object, or an array of
            events ("item 0", "item 1", ...)
    csv     a flat table of events (.csv), columns in `replay/csv_format.py`
    fhir    a FHIR R4 Bundle (.json whose resourceType is "Bundle")

A JSON document that does not parse, a CSV whose header names a column
that is not documented, a FHIR document that is not a Bundle: the whole
file is refused before anything is sent (`ReplayError`, exit 2). A record
that cannot be read as an event is a reject of its own, with a reason.
Messages name a place in the file and never quote its content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

from spinewatch.errors import ReplayError
from spinewatch.replay.csv_format import csv_records
from spinewatch.replay.records import Record

_CHUNK = 1 << 20


class Format(StrEnum):
    JSONL = "jsonl"
    JSON = "json"
    CSV = "csv"
    FHIR = "fhir"


_BY_SUFFIX = {".jsonl": Format.JSONL, ".ndjson": Format.JSONL, ".csv": Format.CSV}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def detect_format(path: Path, declared: Format | None = None) -> Format:
    """The declared format, else the suffix's; a .json file is a Bundle or events."""
    if declared is not None:
        return declared
    by_suffix = _BY_SUFFIX.get(path.suffix.lower())
    if by_suffix is not None:
        return by_suffix
    head = _first_byte(path)
    if head == b"[":
        return Format.JSON
    if head != b"{":
        raise ReplayError(
            f"{path}: cannot tell the format (not .jsonl, .ndjson, .json or .csv, "
            "and not JSON); name it with --format"
        )
    try:
        document = load_document(path.read_bytes(), path)
    except ReplayError as exc:
        # A first object followed by more is JSON Lines (as `spinewatch validate` reads).
        if "Extra data" in str(exc):
            return Format.JSONL
        raise
    return Format.FHIR if is_bundle(document) else Format.JSON


def is_bundle(document: Any) -> bool:
    return isinstance(document, dict) and document.get("resourceType") == "Bundle"


def read_records(path: Path, fmt: Format) -> Iterator[Record]:
    """The records of a JSON Lines, JSON or CSV file, in file order."""
    if fmt is Format.JSONL:
        with path.open("rb") as handle:
            yield from jsonl_records(handle)
    elif fmt is Format.JSON:
        yield from document_records(load_document(path.read_bytes(), path))
    elif fmt is Format.CSV:
        yield from csv_records(path)
    else:  # pragma: no cover - FHIR files are read by replay/fhir_source.py
        raise ValueError(f"not a plain event format: {fmt}")


def jsonl_records(lines: Iterable[bytes]) -> Iterator[Record]:
    """One record per non-blank line, positioned by its line number (1-based)."""
    index = 0
    for number, line in enumerate(lines, start=1):
        body = line.strip()
        if not body:
            continue
        # The line's own bytes travel: the engine validates exactly what was in the file.
        yield Record(index, f"line {number}", body)
        index += 1


def document_records(document: Any) -> Iterator[Record]:
    """An event object is one record; an array is one record per item."""
    if not isinstance(document, list):
        yield Record(0, "document", _encode(document))
        return
    for index, item in enumerate(document):
        yield Record(index, f"item {index}", _encode(item))


def load_document(raw: bytes, path: Path) -> Any:
    """Parse a whole JSON document, or refuse the file with where it broke."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReplayError(f"{path}: not UTF-8 (byte {exc.start})") from None
    try:
        # NaN and Infinity stay strings: the contract then names the field
        # ("Input should be a valid number") instead of refusing the file.
        return json.loads(text, parse_constant=str)
    except json.JSONDecodeError as exc:
        # The decoder's message names a line and column, never the text.
        raise ReplayError(f"{path}: not one JSON document ({exc.msg} at line {exc.lineno}, "
                          f"column {exc.colno})") from None  # fmt: skip
    except RecursionError:
        raise ReplayError(f"{path}: JSON nested too deeply to read") from None


def _encode(item: Any) -> bytes:
    # ASCII escapes: a lone surrogate in the file reaches the contract as an
    # escape it rejects, rather than failing to encode here.
    return json.dumps(item, separators=(",", ":")).encode()


def _first_byte(path: Path) -> bytes:
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1]
