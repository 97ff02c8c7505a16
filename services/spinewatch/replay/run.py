"""The replay loop: read, check, send in chunks, and count every record once.

Each file's records go in chunks (`--batch-size`). A chunk is checked here
first: a record that breaks its contract is rejected without being sent
(rejects never reach Kafka), and an event whose event_id this replay has
already seen stored is a duplicate (a conflict if its content differs)
and is not sent again. The rest go to the sink, and the chunk counts once
the sink gave every one of them a final answer: the ledger then writes the
rejects, the ids and the state (replay/ledger.py).

**Counting each event once across an interruption.** Before a chunk is
sent, the state records that records up to its end may be on their way
(`sent_until`). A run that is interrupted before the answer arrives has
counted none of the chunk; the next run starts at the last confirmed
record and sends the chunk again. Each record is counted when its chunk
is confirmed, and a chunk is confirmed once, so the summary counts every
record of the input exactly once, whatever was interrupted where. One
answer needs a rule: a record of that window may have been stored by the
interrupted run, so the gateway now answers `duplicate` for what was in
fact this replay's own first write. Such a record counts as **accepted**
(and as `resent`): the interrupted run's lost answer was "accepted". A
true duplicate inside the file is told apart locally (the ids file holds
every event_id this replay saw stored, and the chunk's own), so it is
still a duplicate. Only an event that was already stored before the
interrupted run, and falls inside its unanswered chunk, would be counted
as accepted rather than duplicate: at most one chunk's worth, and only
after an interruption. Direct to Kafka there is no such answer: a record
sent twice is acknowledged twice, counted once here, and applied once by
the engine, which keeps events keyed by event_id (replay/kafka_sink.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Protocol

from spinewatch.contracts import Event, parse_event
from spinewatch.errors import InvalidEvent, ReplayError
from spinewatch.replay.gateway_sink import GatewaySink
from spinewatch.replay.ledger import DIGEST_BYTES, FileProgress, Ledger
from spinewatch.replay.records import Counts, Outcome, Outgoing, Record, Status
from spinewatch.replay.sources import Format

IN_REPLAY_CONFLICT = "this event_id occurs earlier in the replay with different content"
_ACCEPTED = Outcome(Status.ACCEPTED)
_DUPLICATE = Outcome(Status.DUPLICATE)


class Sink(Protocol):
    async def send(self, items: Sequence[Outgoing]) -> list[Outcome]: ...


class View(Protocol):
    """Where progress is shown (a progress bar, or nothing)."""

    def start_file(self, name: str, total: int, done: int) -> None: ...
    def advance(self, count: int) -> None: ...


@dataclass(frozen=True)
class ReplayInput:
    path: Path
    display: str  # as given on the command line: the rejects file names it so
    format: Format
    sha256: str
    total: int  # records in the file (a bundle for the gateway: its entries, for the bar)
    records: Callable[[], Iterator[Record]]  # a fresh pass over them, in file order
    bundle: bytes | None = None  # FHIR through the gateway: the bundle, sent whole
    site_id: str | None = None  # ... and the site it is for


async def replay(
    inputs: Sequence[ReplayInput], sink: Sink, ledger: Ledger, view: View, chunk_size: int
) -> None:
    """Replay every input from where the ledger says it stopped."""
    for item in inputs:
        progress = ledger.progress(item.path, item.sha256, item.format.value)
        done = item.total if progress.complete else min(progress.confirmed, item.total)
        view.start_file(item.display, item.total, done)
        if progress.complete:
            continue
        chunks = _Chunks(sink, ledger, progress, item.display)
        if item.bundle is not None:
            if not isinstance(sink, GatewaySink):  # pragma: no cover - the CLI pairs them
                raise ReplayError("a FHIR bundle is sent whole only through the gateway")
            await chunks.bundle(sink, item.bundle, item.site_id)
            view.advance(item.total)
            continue
        pending = batched(islice(item.records(), progress.confirmed, None), chunk_size)
        chunk = next(pending, None)
        while chunk is not None:
            following = next(pending, None)
            await chunks.run(chunk, last=following is None)
            view.advance(len(chunk))
            chunk = following
        if not progress.complete:  # nothing was left to send (or the file is empty)
            ledger.finish(progress)


def batched(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    iterator = iter(records)
    while chunk := list(islice(iterator, size)):
        yield chunk


def check(record: Record) -> Outcome | tuple[Event, bytes]:
    """The record's event and its canonical JSON, or why it is rejected."""
    if record.payload is None:
        return Outcome(Status.REJECTED, record.errors)
    try:
        event = parse_event(record.payload)
    except InvalidEvent as exc:
        return Outcome(Status.REJECTED, exc.errors)
    # What the gateway writes too: the validated model dumped again, so
    # both doors send the same bytes and the same content digest.
    return event, event.model_dump_json().encode()


class _Chunks:
    def __init__(self, sink: Sink, ledger: Ledger, progress: FileProgress, display: str) -> None:
        self.sink = sink
        self.ledger = ledger
        self.progress = progress
        self.display = display
        # Records before this may have been sent by an interrupted run.
        self.window_end = progress.sent_until

    async def run(self, chunk: Sequence[Record], last: bool) -> None:
        outcomes: list[Outcome | None] = []
        sending: list[tuple[int, Outgoing, bytes, bytes]] = []  # position, item, id, digest
        in_chunk: dict[bytes, bytes] = {}
        for position, record in enumerate(chunk):
            checked = check(record)
            if isinstance(checked, Outcome):
                outcomes.append(checked)
                continue
            event, canonical = checked
            event_id = event.event_id.bytes
            digest = hashlib.sha256(canonical).digest()[:DIGEST_BYTES]
            held = self.ledger.seen.get(event_id) or in_chunk.get(event_id)
            if held is not None:
                same = held == digest
                outcomes.append(
                    _DUPLICATE if same else Outcome(Status.CONFLICT, reason=IN_REPLAY_CONFLICT)
                )
                continue
            in_chunk[event_id] = digest
            outcomes.append(None)
            # Keyed as the gateway keys it (the UUID's 16 bytes): one partition per procedure.
            outgoing = Outgoing(canonical, event.procedure_id.bytes)
            sending.append((position, outgoing, event_id, digest))
        end = chunk[-1].index + 1
        counts = Counts()
        stored: list[tuple[bytes, bytes]] = []
        if sending:
            self.ledger.mark_sending(self.progress, end)
            answers = await self.sink.send([outgoing for _, outgoing, _, _ in sending])
            for (position, _, event_id, digest), answer in zip(sending, answers, strict=True):
                final = self._final(chunk[position], answer, counts)
                outcomes[position] = final
                if final.status.stored:
                    stored.append((event_id, digest))
        self._commit(chunk, outcomes, stored, counts, end, complete=last)

    async def bundle(self, sink: GatewaySink, raw: bytes, site_id: str | None) -> None:
        """A FHIR bundle through the gateway: one request, an answer per event or reject.

        The gateway maps the bundle itself, so its items are known only
        from the answer; the bundle as a whole is the unit of resumption.
        """
        sent_before = self.window_end > 0
        self.ledger.mark_sending(self.progress, 1)
        answers = await sink.send_bundle(raw, site_id)
        counts = Counts()
        records: list[Record] = []
        outcomes: list[Outcome | None] = []
        for i, (entry, answer) in enumerate(answers):
            records.append(Record(i, entry or f"mapped event {i}", None))
            final = answer
            if sent_before:
                # The whole bundle is the unanswered chunk. (The gateway leaves a
                # receipt-time recorded_at out of its comparison, so a resent
                # bundle's events come back duplicate, not conflict.)
                counts.resent += 1
                if answer.status is Status.DUPLICATE:
                    final = _ACCEPTED
            outcomes.append(final)
        self._commit(records, outcomes, (), counts, len(records), complete=True)

    def _final(self, record: Record, answer: Outcome, counts: Counts) -> Outcome:
        """The counting rule of the module docstring, for one record the sink answered."""
        if record.index >= self.window_end:
            return answer
        counts.resent += 1
        return _ACCEPTED if answer.status is Status.DUPLICATE else answer

    def _commit(
        self,
        chunk: Sequence[Record],
        outcomes: Sequence[Outcome | None],
        stored: Iterable[tuple[bytes, bytes]],
        counts: Counts,
        end: int,
        *,
        complete: bool,
    ) -> None:
        results = [(record, outcome) for record, outcome in zip(chunk, outcomes, strict=True)
                   if outcome is not None]  # fmt: skip
        if len(results) != len(chunk):  # pragma: no cover - every sent record is answered
            raise ReplayError("a record of the chunk got no answer")
        for _, outcome in results:
            counts.add(outcome.status)
        self.ledger.commit(
            self.progress,
            end,
            display_name=self.display,
            results=results,
            stored=stored,
            counts=counts,
            complete=complete,
        )
