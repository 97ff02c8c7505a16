"""Preparing the input files before anything is sent.

Every file is read once up front: its format settled, its SHA-256 taken,
its records counted (the progress bar's total), and its progress looked up
in the ledger. A file that cannot be read as its format, or that changed
since an interrupted replay, stops the command here, before the first
record of any file leaves (`ReplayError`, exit 2).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from spinewatch.errors import ReplayError
from spinewatch.replay.ledger import Ledger
from spinewatch.replay.records import Record
from spinewatch.replay.run import ReplayInput
from spinewatch.replay.sources import (
    Format,
    detect_format,
    document_records,
    file_sha256,
    is_bundle,
    load_document,
    read_records,
)


@dataclass(frozen=True)
class FhirOptions:
    """What a FHIR bundle needs: mapped here (to Kafka) or by the gateway."""

    through_gateway: bool
    site_id: str | None
    source: str | None
    pseudonym_key: bytes | None  # only to map here


def prepare(
    paths: Sequence[str], declared: Format | None, ledger: Ledger, fhir: FhirOptions
) -> list[ReplayInput]:
    if len({Path(name).resolve() for name in paths}) != len(paths):
        raise ReplayError("a file is named twice")
    return [_prepare(name, declared, ledger, fhir) for name in paths]


def _prepare(name: str, declared: Format | None, ledger: Ledger, fhir: FhirOptions) -> ReplayInput:
    path = Path(name)
    if not path.is_file():
        raise ReplayError(f"{path}: no such file")
    try:
        fmt = detect_format(path, declared)
        sha256 = file_sha256(path)
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read it ({exc.strerror})") from None
    progress = ledger.progress(path, sha256, fmt.value)
    if fmt is Format.FHIR:
        return _fhir_input(
            path, name, sha256=sha256, fhir=fhir, received_at=progress.received_at, ledger=ledger
        )
    if fmt is Format.JSON:
        cached = list(document_records(load_document(path.read_bytes(), path)))
        return ReplayInput(path, name, fmt, sha256, len(cached), lambda: iter(cached))
    # Streamed (a JSON Lines or CSV file may be larger than memory): counted
    # now, read again while sending. Counting also reads every row, so a
    # CSV defect that refuses the file is found before anything is sent.
    total = sum(1 for _ in read_records(path, fmt))

    def records() -> Iterator[Record]:
        return read_records(path, fmt)

    return ReplayInput(path, name, fmt, sha256, total, records)


def _fhir_input(
    path: Path,
    name: str,
    *,
    sha256: str,
    fhir: FhirOptions,
    received_at: str | None,
    ledger: Ledger,
) -> ReplayInput:
    raw = path.read_bytes()
    document = load_document(raw, path)
    if not is_bundle(document):
        raise ReplayError(f"{path}: not a FHIR Bundle (its resourceType is not Bundle)")
    if fhir.through_gateway:
        # The gateway maps it with its own key; its items are known from its answer.
        entries = document.get("entry")
        count = len(entries) if isinstance(entries, list) else 1
        return ReplayInput(path, name, Format.FHIR, sha256, count, lambda: iter(()),
                           bundle=raw, site_id=fhir.site_id)  # fmt: skip
    if fhir.site_id is None or fhir.source is None or fhir.pseudonym_key is None:
        raise ReplayError(
            f"{path}: a FHIR bundle sent to Kafka is mapped here: give --site-id and --source "
            "(and the pseudonym key)"
        )
    # The mapping's clock is kept in the state: a resumed replay maps the
    # bundle to the very same events as the interrupted one.
    progress = ledger.progress(path, sha256, Format.FHIR.value)
    if received_at is None:
        received_at = datetime.now(UTC).isoformat()
        progress.received_at = received_at
        ledger.save()
    from spinewatch.replay.fhir_source import fhir_records  # noqa: PLC0415 - loads the FHIR models

    mapped = fhir_records(
        document, fhir.source, fhir.site_id, fhir.pseudonym_key, datetime.fromisoformat(received_at)
    )
    return ReplayInput(path, name, Format.FHIR, sha256, len(mapped), lambda: iter(mapped))
