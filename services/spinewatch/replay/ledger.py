"""A replay's durable progress: the state file, the rejects file and the ids seen.

Three files move together, and the state file says how far the other two
are valid:

* the state (JSON): per input file its SHA-256, how many leading records
  have a durable outcome (`confirmed`: broker-acknowledged or answered by
  the gateway), up to where records may have been sent (`sent_until`), and
  the running counts; plus the byte length of the rejects file and the
  number of ids in the ids file at that moment. Written to a temporary
  file and renamed over the old one (`os.replace`), so a kill at any
  instant leaves either the old state or the new one;
* the rejects file (JSON Lines): one line per record that was not stored,
  with its file, position and reasons, never its values;
* the ids file: the event_id (16 bytes) and content digest (16 bytes) of
  every event this replay has seen stored, so a second copy later in the
  input (or in another input file) is counted as a duplicate, or as a
  conflict when its content differs, also across a resumption.

On resumption the rejects and ids files are cut back to the lengths the
state recorded: whatever an interrupted run wrote after its last state
write belongs to records that will be processed again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spinewatch.errors import FieldError, ReplayError
from spinewatch.replay.records import Counts, Outcome, Record

STATE_VERSION = 1
ID_BYTES = 16
DIGEST_BYTES = 16
_ENTRY = ID_BYTES + DIGEST_BYTES


@dataclass(slots=True)
class FileProgress:
    sha256: str
    format: str
    confirmed: int = 0  # leading records whose outcome is durable
    # Records before this ordinal may have been sent by an earlier run whose
    # answer never arrived (only records at or after `confirmed` matter).
    sent_until: int = 0
    counts: Counts = field(default_factory=Counts)
    received_at: str | None = None  # FHIR: the mapping's clock, reused on resumption
    complete: bool = False  # every record has its final outcome

    def as_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "format": self.format,
            "confirmed": self.confirmed,
            "sent_until": self.sent_until,
            "counts": self.counts.as_json(),
            "received_at": self.received_at,
            "complete": self.complete,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileProgress:
        return cls(
            sha256=str(data["sha256"]),
            format=str(data["format"]),
            confirmed=int(data["confirmed"]),
            sent_until=int(data["sent_until"]),
            counts=Counts.from_json(data["counts"]),
            received_at=data.get("received_at"),
            complete=bool(data.get("complete", False)),
        )


class Ledger:
    """Open with `Ledger.open`; `commit` after every answered chunk."""

    def __init__(self, state_path: Path, rejects_path: Path, sink: str) -> None:
        self.state_path = state_path
        self.rejects_path = rejects_path
        self.ids_path = state_path.with_name(state_path.name + ".ids")
        self.sink = sink
        self.files: dict[str, FileProgress] = {}
        self.seen: dict[bytes, bytes] = {}  # event_id -> content digest
        self.resumed = False
        self._rejects_bytes = 0

    @classmethod
    def open(cls, state_path: Path, rejects_path: Path, sink: str, restart: bool) -> Ledger:
        ledger = cls(state_path, rejects_path, sink)
        if restart or not state_path.exists():
            ledger._start_afresh()
        else:
            ledger._resume()
        return ledger

    def _start_afresh(self) -> None:
        # The old state goes first: rejects and ids emptied under it would
        # no longer match it. The new one is written with the first chunk,
        # so a command refused before sending anything leaves no state.
        self.state_path.unlink(missing_ok=True)
        for path in (self.rejects_path, self.ids_path):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")

    def _resume(self) -> None:
        try:
            state = json.loads(self.state_path.read_bytes())
            if state.get("version") != STATE_VERSION:
                raise ValueError("version")
            sink, rejects = state["sink"], state["rejects"]
            rejects_bytes, ids_count = int(state["rejects_bytes"]), int(state["ids"])
            files = {name: FileProgress.from_json(data) for name, data in state["files"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            raise ReplayError(
                f"{self.state_path}: not a replay state file this version can read; "
                "use --restart to replay from the start"
            ) from None
        if sink != self.sink:
            raise ReplayError(
                f"{self.state_path} belongs to a replay to {sink}, not to {self.sink}; "
                "use the same destination, another --state, or --restart"
            )
        if rejects != str(self.rejects_path.resolve()):
            raise ReplayError(
                f"{self.state_path} records its rejects in {rejects}; "
                "use the same --rejects, or --restart"
            )
        self._rejects_bytes = rejects_bytes
        _cut(self.rejects_path, rejects_bytes, "rejects")
        _cut(self.ids_path, ids_count * _ENTRY, "ids")
        raw = self.ids_path.read_bytes()
        entries = (raw[i : i + _ENTRY] for i in range(0, len(raw), _ENTRY))
        self.seen = {entry[:ID_BYTES]: entry[ID_BYTES:] for entry in entries}
        self.files = files
        self.resumed = True

    def progress(self, path: Path, sha256: str, fmt: str) -> FileProgress:
        """This file's progress so far; refuses a file that changed since."""
        key = str(path.resolve())
        known = self.files.get(key)
        if known is None:
            known = self.files[key] = FileProgress(sha256, fmt)
        elif known.sha256 != sha256:
            raise ReplayError(
                f"{path} changed since the replay recorded in {self.state_path} "
                "(its SHA-256 differs); use --restart to replay every file from the start"
            )
        elif known.format != fmt:
            raise ReplayError(
                f"{path} was replayed as {known.format}, now as {fmt}; "
                "use the same --format, or --restart"
            )
        return known

    def mark_sending(self, progress: FileProgress, until: int) -> None:
        """Records up to `until` are about to be sent: say so before they leave."""
        if until > progress.sent_until:
            progress.sent_until = until
            self.save()

    def commit(
        self,
        progress: FileProgress,
        end: int,
        *,
        display_name: str,
        results: Sequence[tuple[Record, Outcome]],
        stored: Iterable[tuple[bytes, bytes]],
        counts: Counts,
        complete: bool = False,
    ) -> None:
        """A chunk's outcomes are final: rejects and ids first, then the state."""
        lines = [
            reject_line(display_name, record, outcome)
            for record, outcome in results
            if outcome.status.failed
        ]
        if lines:
            with self.rejects_path.open("ab") as handle:
                handle.write(b"".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
                self._rejects_bytes = handle.tell()
        new = {event_id: digest for event_id, digest in stored if event_id not in self.seen}
        if new:
            self.seen.update(new)
            with self.ids_path.open("ab") as handle:
                handle.write(b"".join(event_id + digest for event_id, digest in new.items()))
                handle.flush()
                os.fsync(handle.fileno())
        progress.confirmed = end
        progress.complete = complete
        progress.counts.merge(counts)
        self.save()

    def finish(self, progress: FileProgress) -> None:
        progress.complete = True
        self.save()

    def save(self) -> None:
        state = {
            "version": STATE_VERSION,
            "sink": self.sink,
            "rejects": str(self.rejects_path.resolve()),
            "rejects_bytes": self._rejects_bytes,
            "ids": len(self.seen),
            "files": {name: progress.as_json() for name, progress in self.files.items()},
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_name(self.state_path.name + ".tmp")
        with temporary.open("wb") as handle:
            handle.write(json.dumps(state, indent=1).encode())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.state_path)


def reject_line(display_name: str, record: Record, outcome: Outcome) -> bytes:
    """One line of the rejects file: where the record is and why, never what it holds."""
    line: dict[str, Any] = {
        "file": display_name,
        "position": record.position,
        "record": record.index,
        "status": outcome.status.value,
        "errors": [error_json(error) for error in outcome.errors],
    }
    if outcome.reason is not None:
        line["reason"] = outcome.reason
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"


def error_json(error: FieldError) -> dict[str, str]:
    return {"loc": error.location, "type": error.code, "msg": error.message}


def _cut(path: Path, length: int, what: str) -> None:
    """Cut a file back to the length the state recorded (it can only have grown since)."""
    size = path.stat().st_size if path.exists() else -1
    if size < length:
        raise ReplayError(
            f"the {what} file {path} is shorter than the state recorded "
            "(edited or deleted since?); use --restart to replay from the start"
        )
    if size > length:
        with path.open("r+b") as handle:
            handle.truncate(length)
