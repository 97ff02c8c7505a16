"""An alert walked through every investigation step over HTTP, by two people.

A real `spinewatch alerting` process (at log level debug), a real
redis-server, the session broker. A signed `drift.signalled` and its
signed `drift.lookback` go to their topics (with a forged look-back
beside them); the alert fires. Then, with two bearer tokens from a
credentials file as `spinewatch token new` writes it: acknowledged by A,
investigated by B, closed by A with a finding, a note and a chart reset,
with the refused moves in between. The test reads the history, checks
that the audit topic holds each step exactly once, that the control topic
holds exactly one signed chart reset, that the look-back list comes back
as published, and that no free text reached a log line or a webhook.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from spinewatch.adapters.kafka_admin import ensure_topics
from spinewatch.adapters.kafka_clients import started
from spinewatch.adapters.message_signing import Keyring, TopicKind
from spinewatch.contracts.control import FINDINGS, ChartReset
from spinewatch.contracts.topics import Topology
from spinewatch.devservers.tansu import free_port
from spinewatch.domain.alerts.investigation import reset_id
from tests.support import (
    TEST_SIGNING_KEY,
    consume,
    produce_drift,
    scaled,
    scrape_async,
    sum_by,
    wait_until,
)
from tests.test_alerting import FINGERPRINT, Webhook, _credentials, _signal
from tests.test_investigation import _lookback

pytestmark = pytest.mark.e2e

# Free text: it may reach Redis, the history API and the audit topic, nothing else.
ACK_REASON = "CANARY-ACK paged at handover, looking at it"
INVESTIGATE_REASON = "CANARY-INV reviewing June cases with the M&M lead"
CLOSE_REASON = "CANARY-CLOSE discussed at M&M 2026-02-03"
NOTE = "CANARY-NOTE cement lot 7 mixed with the wrong monomer ratio; supplier informed"
FREE_TEXT = (ACK_REASON, INVESTIGATE_REASON, CLOSE_REASON, NOTE)


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # A file, not a pipe: an unread pipe fills up and blocks the service.
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "spinewatch", "alerting"],
            env=os.environ | env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


@asynccontextmanager
async def _alerting_process(env: dict[str, str], port: int) -> AsyncIterator[Path]:
    """`spinewatch alerting` as an OS process; yields the path of its stderr."""
    log = Path(tempfile.mkdtemp()) / "alerting.stderr"
    process = _spawn(env, log)
    try:

        async def healthz() -> int:
            if process.poll() is not None:
                raise AssertionError(f"alerting exited {process.returncode}: {log.read_text()}")
            try:
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://127.0.0.1:{port}/healthz") as answer,
                ):
                    return answer.status
            except aiohttp.ClientError:
                return 0

        await wait_until(healthz, lambda s: s == 200, 30, "the alerting service")
        yield log
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, scaled(20))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _publish_lookbacks(bootstrap: str, topic: str, signed: bytes, forged: bytes) -> None:
    key = b"riverside"
    header = Keyring(TEST_SIGNING_KEY.encode()).sign(TopicKind.LOOKBACK, key, signed)
    # A drift signature does not make a look-back message: the kind is signed.
    wrong_kind = Keyring(TEST_SIGNING_KEY.encode()).sign(TopicKind.DRIFT, key, forged)
    async with started(AIOKafkaProducer(bootstrap_servers=bootstrap)) as producer:
        await producer.send_and_wait(topic, signed, key=key, headers=[header])
        await producer.send_and_wait(topic, forged, key=key)
        await producer.send_and_wait(topic, forged, key=key, headers=[wrong_kind])


async def test_an_alert_is_walked_through_every_step_by_two_people(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    topology = Topology(f"t{uuid.uuid4().hex[:12]}")
    await ensure_topics(kafka_bootstrap, topology.names(), topology.partitions)
    _, tokens = _credentials(tmp_path, ash="dr-ash", birch="dr-birch")
    webhook = Webhook()
    await webhook.start()
    port = free_port()
    env = {
        "SPINEWATCH_ALERTING_KAFKA_BROKERS": kafka_bootstrap,
        "SPINEWATCH_ALERTING_APP_ID": topology.app_id,
        "SPINEWATCH_ALERTING_REDIS_URL": redis_url,
        "SPINEWATCH_ALERTING_KEY_PREFIX": topology.app_id,
        "SPINEWATCH_ALERTING_SIGNING_KEY": TEST_SIGNING_KEY,
        "SPINEWATCH_ALERTING_CREDENTIALS_FILE": str(tmp_path / "alerting-credentials.toml"),
        "SPINEWATCH_ALERTING_WEBHOOK_URLS": json.dumps([webhook.url]),
        "SPINEWATCH_ALERTING_HTTP_PORT": str(port),
        "SPINEWATCH_ALERTING_POLL_INTERVAL_S": "0.1",
        "SPINEWATCH_ALERTING_LOG_LEVEL": "debug",
    }
    signal = _signal()
    published = _lookback(signal.signal_id, 5)
    effective_after = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    base = f"http://127.0.0.1:{port}"
    try:
        async with (
            _alerting_process(env, port) as log,
            aiohttp.ClientSession(base_url=base) as http,
        ):

            async def call(method: str, path: str, who: str | None, body: Any = None) -> Any:
                headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
                async with http.request(method, path, json=body, headers=headers) as answer:
                    return answer.status, await answer.json()

            key = signal.site_id.encode()
            await produce_drift(
                kafka_bootstrap, topology.drift, [(key, signal.model_dump_json().encode())]
            )
            await _publish_lookbacks(
                kafka_bootstrap, topology.lookback, published, _lookback(uuid.uuid4(), 2)
            )

            async def listed() -> list[dict[str, Any]]:
                return (await call("GET", "/alerts", "ash"))[1]  # type: ignore[no-any-return]

            (alert,) = await wait_until(listed, lambda a: len(a) == 1, 20, "the alert")
            assert (alert["fingerprint"], alert["investigation"]["status"]) == (
                FINGERPRINT,
                "fired",
            )
            investigation = alert["investigation"]["id"]
            at = f"/alerts/{FINGERPRINT}"

            # Refused: no identity; a step out of order; an unknown alert.
            assert (await call("POST", f"{at}/ack", None))[0] == 401
            assert (await call("POST", f"{at}/investigate", "birch", {"reason": "r"}))[1] | {"error": ""} == {
                "outcome": "refused", "error": "", "status": "fired", "allowed": "acknowledge",
            }  # fmt: skip
            assert (await call("POST", "/alerts/nowhere.x.worse/ack", "ash"))[0] == 404

            status, body = await call("POST", f"{at}/ack", "ash", {"reason": ACK_REASON})
            assert (status, body["status"]) == (200, "acknowledged")
            closing = {
                "finding": "process_issue_action_taken", "note": NOTE, "reason": CLOSE_REASON,
                "chart_action": "reset", "reset_effective_after": effective_after.isoformat(),
            }  # fmt: skip
            status, body = await call("POST", f"{at}/close", "ash", closing)
            assert (status, body["status"], body["allowed"]) == (409, "acknowledged", "investigate")
            status, body = await call("POST", f"{at}/reset", "birch", {"reason": "r"})
            assert (status, body["status"]) == (409, "acknowledged")

            status, body = await call(
                "POST", f"{at}/investigate", "birch", {"reason": INVESTIGATE_REASON}
            )
            assert (status, body["status"]) == (200, "investigating")
            status, body = await call(
                "POST", f"{at}/close", "ash", closing | {"finding": "bad_luck"}
            )
            assert status == 400
            assert [(f["field"], f["type"]) for f in body["fields"]] == [
                ("finding", "literal_error")
            ]
            assert "bad_luck" not in json.dumps(body)
            assert (await call("POST", f"{at}/close", None, closing))[0] == 401
            ahead = {"reset_effective_after": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
            status, body = await call("POST", f"{at}/close", "ash", closing | ahead)
            assert (status, body["fields"][0]["field"]) == (400, "reset_effective_after")

            status, body = await call("POST", f"{at}/close", "ash", closing)
            assert (status, body["status"]) == (200, "closed")
            expected_reset = str(reset_id(investigation, FINGERPRINT))
            assert body["reset_id"] == expected_reset
            status, body = await call("POST", f"{at}/close", "birch", closing)
            assert (status, body["outcome"], body["status"]) == (409, "duplicate", "closed")
            status, body = await call("POST", f"{at}/reset", "birch", {"reason": "again"})
            assert (status, body["outcome"]) == (409, "duplicate")

            # The history: who, when and why of each step.
            _, history = await call("GET", f"{at}/history", "birch")
            assert history["investigation"]["status"] == "closed"
            assert history["investigation"]["reset_id"] == expected_reset
            steps = history["transitions"]
            assert [(s["transition"], s["by"], s["reason"]) for s in steps] == [
                ("fired", None, None),
                ("acknowledged", "dr-ash", ACK_REASON),
                ("investigating", "dr-birch", INVESTIGATE_REASON),
                ("closed", "dr-ash", CLOSE_REASON),
                ("chart_reset", "dr-ash", CLOSE_REASON),
            ]
            assert (steps[3]["finding"], steps[3]["note"]) == ("process_issue_action_taken", NOTE)
            assert steps[0]["id"] == str(signal.signal_id)  # the firing's transition id
            times = [datetime.fromisoformat(s["at"]) for s in steps]
            assert times == sorted(times)
            assert times[-1] - times[0] < timedelta(minutes=5)

            # The look-back list, as published; any other signal's is not held.
            status, cases = await call("GET", f"{at}/cases", "birch")
            assert status == 200
            assert cases["signal_id"] == str(signal.signal_id)
            assert cases["cases"] == json.loads(published)["cases"]
            assert cases["held_signals"] == [str(signal.signal_id)]
            assert (await call("GET", f"{at}/cases?signal_id=not-a-uuid", "birch"))[0] == 400
            assert (await call("GET", f"{at}/cases", None))[0] == 401

            samples = await scrape_async(f"{base}/metrics")
            rejected = {
                reason: sum_by(
                    samples, "spinewatch_lookback_messages_rejected_total", reason=reason
                )
                for reason in ("unsigned", "bad_signature")
            }
            assert rejected == {"unsigned": 1, "bad_signature": 1}

            async def outbox() -> int:
                samples = await scrape_async(f"{base}/metrics")
                sent = sum_by(samples, "spinewatch_notifications_sent_total")
                return int(sent)

            # firing + 4 steps to the webhook and the audit topic, 1 reset to the control topic
            await wait_until(outbox, lambda n: n >= 11, 20, "every delivery")
        stderr = log.read_text()
    finally:
        await webhook.stop()

    # The audit topic: each step exactly once, with its full record.
    records = await consume(kafka_bootstrap, topology.alerts, 10_000, timeout_s=3)
    audit = [json.loads(r.value) for r in records if r.value]
    assert all(n == 1 for n in Counter(a["id"] for a in audit).values()), audit
    by_step = {a["transition"]: a for a in audit}
    assert sorted(by_step) == sorted(
        ["firing", "acknowledged", "investigating", "closed", "chart_reset"]
    )
    for step in steps[1:]:
        assert by_step[step["transition"]]["id"] == step["id"]
        assert by_step[step["transition"]]["step"] == step
    # The control topic: exactly one chart reset, signed, with what the closing decided.
    (control,) = await consume(kafka_bootstrap, topology.control, 10_000, timeout_s=3)
    assert control.key == b"riverside"
    assert (
        Keyring(TEST_SIGNING_KEY.encode()).verify(
            TopicKind.CONTROL, control.key, control.value, control.headers
        )
        is None
    )
    reset = ChartReset.model_validate_json(control.value)
    assert (str(reset.reset_id), reset.site_id, reset.metric, reset.direction) == (
        expected_reset, "riverside", signal.metric, "worse",
    )  # fmt: skip
    assert (reset.fingerprint, reset.finding, reset.requested_by) == (
        FINGERPRINT, "process_issue_action_taken", "dr-ash",
    )  # fmt: skip
    assert reset.effective_after == effective_after
    # The forged look-back messages were dead-lettered, unread.
    letters = await consume(kafka_bootstrap, topology.deadletter, 2, timeout_s=5)
    assert sorted(dict(r.headers)["spinewatch-reason"] for r in letters) == [
        b"bad_signature",
        b"unsigned",
    ]

    # Webhooks name who and the finding, never free text.
    texts = [p["text"] for p in webhook.received]
    assert [t.split("]", 1)[0] for t in texts] == [
        "[FIRING", "[ACKNOWLEDGED", "[INVESTIGATING", "[CLOSED", "[CHART RESET",
    ]  # fmt: skip
    assert texts[3].endswith(f"(by dr-ash): {FINDINGS['process_issue_action_taken']}")
    assert not [t for t in FREE_TEXT if t in json.dumps(webhook.received)]
    # The service logged the steps (at debug, aiokafka and all): never their free text.
    assert "investigating by dr-birch" in stderr
    assert " DEBUG " in stderr
    assert "CANARY" not in stderr
    assert not [t for t in FREE_TEXT if t in stderr]
