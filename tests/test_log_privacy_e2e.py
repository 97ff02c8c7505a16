"""A worker process at log level debug writes no patient or procedure id.

Before the privacy filter, faust's and aiokafka's debug lines logged every
dead letter and fact batch in full. Here 1,000 valid events and a few
invalid ones, all with canary identifiers, go through a real `spinewatch
worker` at debug; its whole stderr is then searched for every canary in
every spelling, and must hold faust's and aiokafka's send lines (so the
test cannot pass with logging simply off).
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from typing import Any

import pytest

from spinewatch.demo.synthetic.cohort import default_sites, encode, generate_cohort
from tests.conftest import SettingsFactory
from tests.support import consume, produce, scrape_async, sum_by, wait_until
from tests.workers import WorkerProcess

pytestmark = pytest.mark.e2e

EVENTS = 1000
NAME = "Jane Doe 1961-03-02"  # an unknown field's name that identifies someone
_HEX_OR_DASH = re.compile(r"[0-9a-fA-F-]{32,}")
_BYTES_LITERAL = re.compile(r"""b(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")""")


def _with_canaries(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return event | {
        "event_id": str(uuid.uuid4()),
        "patient_ref": str(uuid.uuid4()),
        "procedure_id": str(uuid.uuid4()),
        **changes,
    }


def _invalid_messages(template: dict[str, Any]) -> list[bytes]:
    """Dead letters, each with canary ids, one per kind of defect."""
    bad_field = encode(_with_canaries(template, pre_vas="seven"))
    unknown_name = encode(_with_canaries(template, **{NAME: 1}))
    unknown_uuid_name = encode(_with_canaries(template, **{str(uuid.uuid4()): 1}))
    truncated = encode(_with_canaries(template))[:-40]  # invalid JSON
    return [bad_field, unknown_name, unknown_uuid_name, truncated]


def _ids_in(raw: bytes) -> set[uuid.UUID]:
    return {uuid.UUID(match.group()) for match in _HEX_OR_DASH.finditer(raw.decode())}


def leaked_uuids(text: str, canaries: set[uuid.UUID]) -> set[uuid.UUID]:
    """Canaries in `text`: 8-4-4-4-12 or 32 hex digits, any case, glued or not."""
    by_hex = {canary.hex: canary for canary in canaries}
    found = set()
    for match in _HEX_OR_DASH.finditer(text):
        run = match.group().replace("-", "").lower()
        for start in range(len(run) - 31):
            if run[start : start + 32] in by_hex:
                found.add(by_hex[run[start : start + 32]])
    return found


def leaked_raw_ids(text: str, canaries: set[uuid.UUID]) -> set[uuid.UUID]:
    """Canaries as 16 raw bytes (a fact batch's keys) inside printed bytes literals."""
    printed = b"\0".join(ast.literal_eval(m.group()) for m in _BYTES_LITERAL.finditer(text))
    return {canary for canary in canaries if canary.bytes in printed}


@pytest.mark.timeout(300)
async def test_a_debug_worker_logs_no_identifier(
    make_settings: SettingsFactory, kafka_bootstrap: str
) -> None:
    cohort = generate_cohort(31, default_sites(EVENTS))
    procedures = [e for e in cohort.events if e["event_type"] == "procedure.performed"]
    assert len({e["patient_ref"] for e in procedures}) == EVENTS
    valid = [encode(e) for e in procedures]
    invalid = _invalid_messages(procedures[0])
    canaries = {uuid.UUID(e[key]) for e in procedures for key in ("patient_ref", "procedure_id")}
    canaries |= {u for raw in invalid for u in _ids_in(raw)}
    # Three ids per invalid message, and one unknown field named by a UUID.
    assert len(canaries) == 2 * EVENTS + 3 * len(invalid) + 1

    settings = make_settings(log_level="debug")
    worker = WorkerProcess(settings)
    worker.start()
    try:
        await worker.wait_for_partitions()
        await produce(kafka_bootstrap, settings.events_topic, [*invalid, *valid])

        async def counted() -> float:
            samples = await scrape_async(f"{worker.url}/metrics")
            return sum_by(samples, "spinewatch_events_accepted_total") + sum_by(
                samples, "spinewatch_events_deadlettered_total"
            )

        await wait_until(counted, lambda n: n >= EVENTS + len(invalid), 120, "every event counted")
        letters = await consume(kafka_bootstrap, settings.deadletter_topic, len(invalid))
    finally:
        worker.stop()
    log = worker.stderr()

    assert leaked_uuids(log, canaries) == set()
    assert leaked_raw_ids(log, canaries) == set()
    assert NAME not in log
    # The lines that leaked payloads before are there, at debug, scrubbed.
    sends = re.findall(rf"DEBUG faust\.topics: send: topic='{settings.deadletter_topic}'.*", log)
    assert len(sends) >= len(invalid), sends
    assert all(re.search(r"v=<\d+ bytes>", line) for line in sends)
    assert len(re.findall(r"DEBUG aiokafka\.producer\.producer: Sending \(key=", log)) >= len(
        invalid
    )
    # And the dead-letter headers do not name the unknown field either.
    assert len(letters) == len(invalid)
    headers = [value for letter in letters for _, value in letter.headers]
    assert not [value for value in headers if NAME.encode() in value]
    assert leaked_uuids(b" ".join(headers).decode(), canaries) == set()
    fields = [e["field"] for v in headers if v.startswith(b"[{") for e in json.loads(v)]
    assert f"<field {list(json.loads(invalid[1])).index(NAME) + 1}>" in fields
