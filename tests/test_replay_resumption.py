"""`spinewatch replay`: the ledger, the counting rule and the gateway client.

Unit tests of pure logic. The counting rule is exercised with an
in-memory stand-in for the gateway's idempotency (a dict of event_id ->
content), which is all the rule depends on; the gateway client against a
scripted loopback HTTP server. The real thing, a real broker, worker and
gateway, interrupted and resumed, is tests/test_replay_e2e.py.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from spinewatch.contracts import parse_event
from spinewatch.errors import ReplayError
from spinewatch.replay.ledger import Ledger
from spinewatch.replay.records import Outcome, Outgoing, Record, Status
from spinewatch.replay.run import ReplayInput, check, replay
from spinewatch.replay.sources import Format, file_sha256, read_records
from tests.samples import sample_messages
from tests.test_replay import PATIENT, PROCEDURE

# --- the ledger ---------------------------------------------------------------------------


def test_the_ledger_cuts_what_an_interrupted_run_wrote_after_its_last_state(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"x\n")
    state, rejects = tmp_path / "state.json", tmp_path / "rejects.jsonl"
    ledger = Ledger.open(state, rejects, "kafka here", restart=False)
    progress = ledger.progress(source, file_sha256(source), "jsonl")
    reject = Outcome(Status.REJECTED, parse_errors(b"{}"))
    ledger.commit(
        progress,
        1,
        display_name="in.jsonl",
        results=[(Record(0, "line 1", b"{}"), reject)],
        stored=[(b"i" * 16, b"d" * 16)],
        counts=counts_of(rejected=1),
    )
    # What a run killed before its next state write leaves behind:
    with rejects.open("ab") as handle:
        handle.write(b'{"half a line')
    with ledger.ids_path.open("ab") as handle:
        handle.write(b"j" * 32)

    again = Ledger.open(state, rejects, "kafka here", restart=False)
    assert again.resumed
    assert rejects.read_bytes().count(b"\n") == 1
    assert rejects.read_bytes().endswith(b"\n")
    assert again.seen == {b"i" * 16: b"d" * 16}
    assert again.files[str(source.resolve())].confirmed == 1

    with pytest.raises(ReplayError, match="belongs to a replay to kafka here"):
        Ledger.open(state, rejects, "gateway there", restart=False)
    source.write_bytes(b"y\n")
    with pytest.raises(ReplayError, match="changed since"):
        again.progress(source, file_sha256(source), "jsonl")
    fresh = Ledger.open(state, rejects, "gateway there", restart=True)
    assert not fresh.resumed
    assert rejects.read_bytes() == b""
    assert fresh.seen == {}


def test_a_rejects_file_shorter_than_recorded_is_refused(tmp_path: Path) -> None:
    state, rejects = tmp_path / "state.json", tmp_path / "rejects.jsonl"
    ledger = Ledger.open(state, rejects, "k", restart=False)
    progress = ledger.progress(state, "0" * 64, "jsonl")
    reject = Outcome(Status.REJECTED, parse_errors(b"{}"))
    ledger.commit(
        progress,
        1,
        display_name="x",
        results=[(Record(0, "line 1", None), reject)],
        stored=(),
        counts=counts_of(rejected=1),
    )
    rejects.write_bytes(b"")
    with pytest.raises(ReplayError, match="shorter than the state recorded"):
        Ledger.open(state, rejects, "k", restart=False)


# --- the counting rule, with an in-memory gateway ---------------------------------------


class Interrupted(Exception):
    """Stands for the process dying between the gateway's write and its answer."""


class MemoryGateway:
    """The gateway's idempotency in a dict: first write accepted, same content duplicate."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}
        self.lose_answer_on_call: int | None = None
        self.calls = 0
        self.sent = 0

    async def send(self, items: Sequence[Outgoing]) -> list[Outcome]:
        self.calls += 1
        answers = []
        for item in items:
            self.sent += 1
            event = json.loads(item.payload)
            digest = hashlib.sha256(item.payload).hexdigest()
            held = self.held.get(event["event_id"])
            if held is None:
                self.held[event["event_id"]] = digest
                answers.append(Outcome(Status.ACCEPTED))
            elif held == digest:
                answers.append(Outcome(Status.DUPLICATE))
            else:
                answers.append(Outcome(Status.CONFLICT, reason="other content"))
        if self.calls == self.lose_answer_on_call:
            raise Interrupted  # written, but the answer never reaches the replay
        return answers


class NoView:
    def start_file(self, name: str, total: int, done: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass


def _events(count: int) -> list[bytes]:
    template = json.loads(sample_messages()[1])
    events = []
    for i in range(count):
        event = template | {"event_id": str(uuid.UUID(int=1000 + i)), "vas": float(i % 10)}
        events.append(json.dumps(event).encode())
    return events


def _input(path: Path) -> ReplayInput:
    total = sum(1 for _ in read_records(path, Format.JSONL))
    return ReplayInput(
        path, path.name, Format.JSONL, file_sha256(path), total,
        lambda: read_records(path, Format.JSONL),
    )  # fmt: skip


async def test_an_interrupted_replay_counts_each_event_once(tmp_path: Path) -> None:
    events = _events(40)
    bad = sample_messages()[-1]
    # 40 distinct events, 3 rejects, 2 exact copies (duplicates), 1 conflict.
    conflicting = json.loads(events[3]) | {"vas": 9.5}
    lines = [*events[:10], bad, events[2], *events[10:25], bad, json.dumps(conflicting).encode(),
             *events[25:], events[30], bad]  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    state, rejects = tmp_path / "state.json", tmp_path / "rejects.jsonl"
    gateway = MemoryGateway()
    gateway.lose_answer_on_call = 3  # chunks of 7: records 14..20 written, never confirmed

    ledger = Ledger.open(state, rejects, "gateway memory", restart=False)
    with pytest.raises(Interrupted):
        await replay([_input(path)], gateway, ledger, NoView(), chunk_size=7)
    first = ledger.files[str(path.resolve())]
    assert (first.confirmed, first.sent_until) == (14, 21)

    gateway.lose_answer_on_call = None
    resumed = Ledger.open(state, rejects, "gateway memory", restart=False)
    await replay([_input(path)], gateway, resumed, NoView(), chunk_size=7)
    counts = resumed.files[str(path.resolve())].counts
    assert counts.as_json() == {
        "accepted": 40,  # each event once, 7 of them answered "duplicate" when resent
        "duplicate": 2,
        "conflict": 1,
        "rejected": 3,
        "forbidden": 0,
        "resent": 7,
    }
    assert counts.records == len(lines)
    lines_out = [json.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [(r["position"], r["status"]) for r in lines_out] == [
        ("line 11", "rejected"),
        ("line 28", "rejected"),
        ("line 29", "conflict"),
        ("line 46", "rejected"),
    ]
    assert {e["loc"] for e in lines_out[0]["errors"]} == {"vas", "timepoint"}
    text = rejects.read_text()
    assert PATIENT not in text
    assert PROCEDURE not in text
    assert "week_9" not in text
    # The local duplicates and the conflict never reached the gateway.
    assert gateway.sent == 40 + 7

    # Run again once complete: nothing is sent, the same summary.
    done = Ledger.open(state, rejects, "gateway memory", restart=False)
    await replay([_input(path)], gateway, done, NoView(), chunk_size=7)
    assert gateway.sent == 47
    assert done.files[str(path.resolve())].counts == counts


async def test_a_duplicate_outside_the_window_stays_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(_events(5)) + b"\n")
    gateway = MemoryGateway()
    for event in _events(5)[:2]:  # already held before this replay
        gateway.held[json.loads(event)["event_id"]] = hashlib.sha256(
            parse_event(event).model_dump_json().encode()
        ).hexdigest()
    ledger = Ledger.open(tmp_path / "s.json", tmp_path / "r.jsonl", "g", restart=False)
    await replay([_input(path)], gateway, ledger, NoView(), chunk_size=2)
    counts = ledger.files[str(path.resolve())].counts
    assert (counts.accepted, counts.duplicate, counts.resent) == (3, 2, 0)


# --- helpers ------------------------------------------------------------------------------


def parse_errors(raw: bytes) -> tuple[Any, ...]:
    outcome = check(Record(0, "line 1", raw))
    assert isinstance(outcome, Outcome)
    return outcome.errors


def counts_of(**values: int) -> Any:
    from spinewatch.replay.records import Counts  # noqa: PLC0415

    return Counts(**values)


# --- the gateway client, against a scripted HTTP server -----------------------------------


class ScriptedGateway:
    """A loopback HTTP server answering /v1/events/batch from a script, recording requests."""

    def __init__(self, script: list[tuple[int, dict[str, str], Any]]) -> None:
        self.script = script
        self.requests: list[tuple[str, int]] = []  # (Authorization, items)

    async def handle(self, request: Any) -> Any:
        from aiohttp import web  # noqa: PLC0415

        items = json.loads(await request.read())
        self.requests.append((request.headers.get("Authorization", ""), len(items)))
        status, headers, body = self.script.pop(0)
        if body == "answer":
            body = {"results": [{"index": i, "status": "accepted"} for i in range(len(items))]}
        return web.json_response(body, status=status, headers=headers)


@pytest.fixture
async def scripted() -> Any:
    from aiohttp import web  # noqa: PLC0415

    from spinewatch.devservers.tansu import free_port  # noqa: PLC0415

    gateway = ScriptedGateway([])
    app = web.Application()
    app.router.add_post("/v1/events/batch", gateway.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    gateway.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    yield gateway
    await runner.cleanup()


def _outgoing(count: int) -> list[Outgoing]:
    return [Outgoing(b'{"n":%d}' % i, b"k") for i in range(count)]


async def _send(url: str, items: list[Outgoing], batch: int = 10, give_up: float = 5.0) -> Any:
    import aiohttp  # noqa: PLC0415

    from spinewatch.replay.gateway_sink import GatewaySink  # noqa: PLC0415
    from spinewatch.runtime.failures import FailurePolicy  # noqa: PLC0415

    async with aiohttp.ClientSession() as session:
        sink = GatewaySink(
            session, url, "swt_token", batch_events=batch, give_up_after_s=give_up,
            policy=FailurePolicy(retry_base_s=0.01, retry_max_s=0.05),
        )  # fmt: skip
        return await sink.send(items), sink


async def test_the_gateway_client_waits_retries_and_halves_on_413(scripted: Any) -> None:
    vas_error = {"loc": ["vas"], "type": "float_type", "msg": "Input should be a valid number"}
    five = {
        "results": [
            {"index": 0, "status": "accepted"},
            {"index": 1, "status": "retry"},
            {"index": 2, "status": "duplicate", "event_id": "x"},
            {"index": 3, "status": "rejected", "errors": [vas_error]},
            {"index": 4, "status": "accepted"},
        ]
    }
    scripted.script = [
        (503, {"Retry-After": "0"}, {"status": "retry", "reason": "redis away"}),
        (429, {"Retry-After": "0"}, {"status": "rate_limited", "reason": "budget"}),
        (413, {}, {"status": "too_large", "reason": "at most 5"}),
        (200, {"Retry-After": "0"}, five),
        (200, {}, "answer"),
    ]
    outcomes, sink = await _send(scripted.url, _outgoing(6))
    assert [o.status for o in outcomes] == [
        Status.ACCEPTED, Status.ACCEPTED, Status.DUPLICATE, Status.REJECTED, Status.ACCEPTED,
        Status.ACCEPTED,
    ]  # fmt: skip
    assert outcomes[3].errors[0].location == "vas"
    assert sink.batch_events == 5
    # 503, 429 and 413 repeat the whole request; then 5 items, then the retried one and the 6th.
    assert [n for _, n in scripted.requests] == [6, 6, 6, 5, 2]
    assert {auth for auth, _ in scripted.requests} == {"Bearer swt_token"}


async def test_the_gateway_client_stops_on_a_refused_token(scripted: Any) -> None:
    scripted.script = [(401, {}, {"status": "unauthorized", "reason": "missing or invalid"})]
    with pytest.raises(ReplayError, match="refused the token \\(401\\): missing or invalid"):
        await _send(scripted.url, _outgoing(1))


async def test_the_gateway_client_gives_up_when_nothing_answers() -> None:
    from spinewatch.devservers.tansu import free_port  # noqa: PLC0415
    from spinewatch.errors import SinkUnavailable  # noqa: PLC0415

    with pytest.raises(SinkUnavailable, match=r"gave no answer for 0\.3 s"):
        await _send(f"http://127.0.0.1:{free_port()}", _outgoing(1), give_up=0.3)
