"""End-to-end: the HTTP gateway over real HTTP, against the real broker, Redis and worker.

One gateway and one outcomes worker are shared by the module (a worker
takes 15-30 s to start): the gateway writes to the worker's events topic,
and every event the gateway answered `accepted` must be counted by the
worker (its `spinewatch_events_accepted_total`), no more and no fewer.
Each test sends events with fresh ids and its own procedure, so the tests
do not depend on each other's order.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from spinewatch.devservers.tansu import free_port
from spinewatch.gateway.auth import SourceGrant
from tests.gateways import (
    TWO_SOURCES,
    Credentials,
    RunningGateway,
    gateway_settings,
    running_gateway,
    write_credentials,
)
from tests.probes import failing, health
from tests.support import (
    Sample,
    consume,
    outcome_samples,
    running_worker,
    scaled,
    scrape_async,
    sum_by,
    value,
    wait_until,
    worker_settings,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

GRANTS = {
    **TWO_SOURCES,
    "limited": SourceGrant(source="ris-limited", sites=("limited-a",), rate_per_minute=2),
    # One hospital's two sites: the FHIR bundle to one, its native twin to the other.
    "twins": SourceGrant(source="ris-twins", sites=("twin-fhir", "twin-native")),
}
MAX_BATCH = 20
FHIR_BUNDLE = Path(__file__).parent.parent / "schemas" / "examples" / "fhir" / "bundle.json"
# The same clinical content written by hand as native events (not derived
# from the mapping): two procedures, five pain scores, one complication.
FHIR_TWIN = FHIR_BUNDLE.with_name("bundle.equivalent.jsonl")
NAME = "Jane Doe 1961-03-02"  # must never come back in an answer


def procedure(source: str = "ris-north", site: str = "north-a", **changes: Any) -> dict[str, Any]:
    """A valid procedure.performed event with fresh ids."""
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "schema_version": 1,
        "event_type": "procedure.performed",
        "occurred_at": "2026-03-02T09:30:00Z",
        "recorded_at": "2026-03-02T11:30:00Z",
        "source": source,
        "site_id": site,
        "patient_ref": str(uuid.uuid4()),
        "procedure_id": str(uuid.uuid4()),
        "procedure_type": "pvp",
        "indication": "hemangioma",
        "levels": [
            {
                "vertebra": "L4",
                "approach": "unipedicular",
                "cement_volume_ml": 5.5,
                "leakage_imaging": "ct",
                "leakages": [],
            }
        ],
        "anesthesia": "local",
        "pre_vas": 7.5,
        "neurological_deficit_at_presentation": False,
        "biopsy_taken": True,
    }
    event.update(changes)
    return event


@dataclass
class Deployment:
    gateway: RunningGateway
    worker_url: str
    bootstrap: str
    events_topic: str
    redis_url: str


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return write_credentials(tmp_path_factory.mktemp("credentials"), GRANTS)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployment(
    kafka_bootstrap: str, module_redis: str, credentials: Credentials
) -> AsyncIterator[Deployment]:
    app_id = f"g{uuid.uuid4().hex[:12]}"
    # One process fewer on a 2-core machine (validation inline); no charts (nor
    # follow-up completeness: a FHIR follow-up without Observation.issued is
    # recorded at receipt, which moves its site's clinical clock to today).
    worker = worker_settings(
        kafka_bootstrap, app_id, ingest_processes=0, drift_metrics=(), followup_schedule=()
    )
    settings = gateway_settings(
        kafka_bootstrap,
        module_redis,
        credentials,
        app_id=app_id,
        max_batch_events=MAX_BATCH,
        pseudonym_key="gateway-tests-pseudonym-key-0123456789abcdef",
    )
    async with (
        running_worker(worker, kafka_bootstrap) as running,
        running_gateway(settings, credentials) as gateway,
    ):
        yield Deployment(
            gateway, running.metrics.url, kafka_bootstrap, settings.events_topic, module_redis
        )


async def _gateway_counts(d: Deployment) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return await scrape_async(f"{d.gateway.url}/metrics")


async def _worker_counts_every_accepted_event(d: Deployment) -> float:
    """Wait until the worker counted exactly what the gateway accepted; that number."""
    accepted = value(
        await _gateway_counts(d), "spinewatch_gateway_events_total", outcome="accepted"
    )

    async def counted() -> float:
        samples = await scrape_async(f"{d.worker_url}/metrics")
        return sum_by(samples, "spinewatch_events_accepted_total")

    seen = await wait_until(counted, lambda n: n >= accepted, 60, "the worker to count them")
    assert seen == accepted
    return accepted


async def _copies(d: Deployment, event_ids: set[str], expected: int) -> dict[str, int]:
    records = await consume(d.bootstrap, d.events_topic, expected, timeout_s=10)
    copies = dict.fromkeys(event_ids, 0)
    for record in records:
        found = json.loads(record.value or b"{}").get("event_id")
        if found in copies:
            copies[found] += 1
    return copies


async def test_accepted_once_duplicate_not_written_again_conflict_refused(
    deployment: Deployment,
) -> None:
    gw = deployment.gateway
    event = procedure()
    first = await gw.post("/v1/events", event, by="north")
    # The same event again, spelled differently (key order, whitespace).
    respelled = json.dumps(dict(reversed(list(event.items()))), indent=2).encode()
    again = await gw.post("/v1/events", raw=respelled, by="north")
    changed = await gw.post("/v1/events", {**event, "pre_vas": 3.0}, by="north")

    assert first[0] == 202, first
    assert first[2] == {"status": "accepted", "event_id": event["event_id"]}
    assert again[0] == 200, again
    assert again[2] == {"status": "duplicate", "event_id": event["event_id"]}
    assert changed[0] == 409, changed
    assert changed[2]["status"] == "conflict"
    assert "different content" in changed[2]["reason"]

    accepted = await _worker_counts_every_accepted_event(deployment)
    assert accepted >= 1
    copies = await _copies(deployment, {event["event_id"]}, int(accepted))
    assert copies == {event["event_id"]: 1}, "a duplicate or a conflict was written"
    # The record is keyed by procedure (per-procedure order within a partition).
    records = await consume(deployment.bootstrap, deployment.events_topic, int(accepted), 10)
    [mine] = [r for r in records if json.loads(r.value or b"{}")["event_id"] == event["event_id"]]
    assert mine.key == uuid.UUID(event["procedure_id"]).bytes


async def test_malformed_oversized_unauthenticated_and_wrong_media_type_are_refused(
    deployment: Deployment,
) -> None:
    gw = deployment.gateway
    bad = procedure(patient_ref=NAME, pre_vas=11, levels=[{"vertebra": "L9"}])
    bad[NAME] = "x"  # an unknown field whose name identifies someone
    malformed = await gw.post("/v1/events", bad, by="north")
    not_json = await gw.post("/v1/events", raw=b"{not json", by="north")
    limit = gw.settings.max_body_bytes
    oversized = await gw.post("/v1/events", raw=b" " * (limit + 1), by="north")
    missing = await gw.post("/v1/events", procedure())
    forged = await gw.post(
        "/v1/events", procedure(), headers={"Authorization": "Bearer swt_abcdefgh_" + "A" * 43}
    )
    text = await gw.post(
        "/v1/events", procedure(), by="north", headers={"Content-Type": "text/plain"}
    )

    assert malformed[0] == 422, malformed
    assert malformed[2]["status"] == "rejected"
    locations = {e["loc"] for e in malformed[2]["errors"]}
    assert {"patient_ref", "pre_vas", "levels.0.vertebra"} <= locations, locations
    assert any(loc.startswith("<field") for loc in locations), "unknown field by position"
    assert all(set(e) == {"loc", "type", "msg"} for e in malformed[2]["errors"])
    assert "Jane" not in json.dumps(malformed[2])
    assert "L9" not in json.dumps(malformed[2])
    assert not_json[0] == 422
    assert not_json[2]["errors"][0]["type"] == "json_invalid"
    assert (oversized[0], oversized[2]["status"]) == (413, "too_large"), oversized
    for answer in (missing, forged):
        assert answer[0] == 401, answer
        assert answer[1]["WWW-Authenticate"].startswith("Bearer")
        assert answer[2]["status"] == "unauthorized"
    assert text[0] == 415, text

    samples = await _gateway_counts(deployment)
    types = {e["type"] for e in malformed[2]["errors"]}
    for reason in {"unauthenticated", "too_large", "unsupported_media_type", *types}:
        assert value(samples, "spinewatch_gateway_rejections_total", reason=reason) >= 1, reason


async def test_another_hospitals_site_or_source_is_forbidden(deployment: Deployment) -> None:
    gw = deployment.gateway
    before = await _gateway_counts(deployment)
    cross_site = await gw.post("/v1/events", procedure(site="south-a"), by="north")
    wrong_source = await gw.post(
        "/v1/events", procedure(source="ris-south", site="north-a"), by="north"
    )
    own = await gw.post("/v1/events", procedure(source="ris-south", site="south-a"), by="south")

    assert cross_site[0] == 403, cross_site
    assert cross_site[2]["status"] == "forbidden"
    assert "'north-a', 'north-b'" in cross_site[2]["reason"], cross_site
    assert wrong_source[0] == 403, wrong_source
    assert "source" in wrong_source[2]["reason"]
    assert own[0] == 202, own
    after = await _gateway_counts(deployment)
    gained = {
        reason: value(after, "spinewatch_gateway_rejections_total", reason=reason)
        - value(before, "spinewatch_gateway_rejections_total", reason=reason)
        for reason in ("site_not_granted", "wrong_source")
    }
    assert gained == {"site_not_granted": 1, "wrong_source": 1}
    await _worker_counts_every_accepted_event(deployment)


async def test_a_source_over_its_rate_budget_gets_429_with_retry_after(
    deployment: Deployment,
) -> None:
    gw = deployment.gateway
    answers = [
        await gw.post("/v1/events", procedure("ris-limited", "limited-a"), by="limited")
        for _ in range(3)
    ]
    other_source = await gw.post("/v1/events", procedure(), by="north")

    assert [a[0] for a in answers] == [202, 202, 429], answers
    assert answers[2][2]["status"] == "rate_limited"
    assert 1 <= int(answers[2][1]["Retry-After"]) <= 60
    assert other_source[0] == 202, "one source's budget is not another's"


async def test_a_batch_answers_each_item(deployment: Deployment) -> None:
    gw = deployment.gateway
    known = procedure()
    assert (await gw.post("/v1/events", known, by="north"))[0] == 202
    fresh = procedure(site="north-b")
    items = [
        fresh,
        known,  # duplicate of an earlier request
        {**known, "pre_vas": 1.0},  # conflict
        procedure(pre_vas="seven"),  # rejected
        procedure(site="south-a"),  # forbidden
        fresh,  # the same event twice in one batch
        42,  # not an object
    ]
    status, headers, body = await gw.post("/v1/events/batch", items, by="north")
    too_many = await gw.post("/v1/events/batch", [procedure()] * (MAX_BATCH + 1), by="north")
    not_array = await gw.post("/v1/events/batch", procedure(), by="north")
    empty = await gw.post("/v1/events/batch", [], by="north")

    assert status == 200, body
    assert [r["status"] for r in body["results"]] == [
        "accepted", "duplicate", "conflict", "rejected", "forbidden", "duplicate", "rejected",
    ]  # fmt: skip
    assert [r["index"] for r in body["results"]] == list(range(len(items)))
    assert {k: body[k] for k in ("accepted", "duplicate", "conflict", "rejected", "forbidden",
                                 "retry")} == {"accepted": 1, "duplicate": 2, "conflict": 1,
                                               "rejected": 2, "forbidden": 1, "retry": 0}  # fmt: skip
    assert body["results"][3]["errors"][0]["loc"] == "pre_vas"
    assert "seven" not in json.dumps(body)
    assert "Retry-After" not in headers
    assert (too_many[0], too_many[2]["status"]) == (413, "too_large"), too_many
    assert not_array[0] == 422
    assert not_array[2]["errors"][0]["type"] == "not_an_array"
    assert empty[0] == 422
    assert empty[2]["errors"][0]["type"] == "empty_batch"
    accepted = await _worker_counts_every_accepted_event(deployment)
    copies = await _copies(deployment, {fresh["event_id"], known["event_id"]}, int(accepted))
    assert copies == {fresh["event_id"]: 1, known["event_id"]: 1}


async def test_a_fhir_bundle_is_written_once_and_a_later_observation_finds_its_procedure(
    deployment: Deployment,
) -> None:
    gw = deployment.gateway
    bundle = json.loads(FHIR_BUNDLE.read_text(encoding="utf-8"))
    headers = {"Content-Type": "application/fhir+json"}
    no_site = await gw.post("/fhir/r4", bundle, by="north", headers=headers)
    other_site = await gw.post("/fhir/r4?site_id=south-a", bundle, by="north", headers=headers)
    first = await gw.post("/fhir/r4?site_id=north-a", bundle, by="north", headers=headers)
    again = await gw.post("/fhir/r4?site_id=north-a", bundle, by="north", headers=headers)
    # A standalone Observation of a procedure the gateway wrote before.
    [observation] = [
        copy.deepcopy(e["resource"])
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
    ][:1]
    observation |= {"id": "pain-later-1", "subject": {"reference": "Patient/p-100234"}}
    later = await gw.post("/fhir/r4?site_id=north-a", observation, by="north", headers=headers)
    unknown = await gw.post(
        "/fhir/r4?site_id=north-a",
        observation | {"partOf": [{"reference": "Procedure/never-sent"}]},
        by="north",
        headers=headers,
    )

    assert no_site[0] == 422, no_site
    assert no_site[2]["errors"][0]["type"] == "site_id_missing"
    assert other_site[0] == 403, other_site
    assert first[0] == 200, first
    mapped = len(first[2]["results"])
    assert mapped >= 2
    assert first[2]["accepted"] == mapped, first
    assert again[2]["duplicate"] == mapped, again
    assert [r["status"] for r in later[2]["results"]] == ["accepted"], later
    assert [r["status"] for r in unknown[2]["results"]] == ["rejected"], unknown
    assert unknown[2]["results"][0]["errors"][0]["type"] == "unknown_procedure"
    assert "never-sent" not in json.dumps(unknown[2])
    await _worker_counts_every_accepted_event(deployment)


async def test_a_fhir_bundle_gives_the_same_cohort_metrics_as_its_native_twin(
    deployment: Deployment,
) -> None:
    gw = deployment.gateway
    bundle = json.loads(FHIR_BUNDLE.read_text(encoding="utf-8"))
    twin = [
        json.loads(line) | {"source": "ris-twins", "site_id": "twin-native"}
        for line in FHIR_TWIN.read_text(encoding="utf-8").splitlines()
    ]
    fhir = await gw.post(
        "/fhir/r4?site_id=twin-fhir", bundle, by="twins",
        headers={"Content-Type": "application/fhir+json"},
    )  # fmt: skip
    native = await gw.post("/v1/events/batch", twin, by="twins")
    assert fhir[0] == 200, fhir
    assert native[0] == 200, native
    assert fhir[2]["accepted"] == native[2]["accepted"] == len(twin), (fhir, native)

    def per_site(samples: dict[Sample, float], site: str) -> dict[Sample, float]:
        """The site's cohort series, with the site label dropped."""
        return {
            (name, frozenset(kv for kv in labels if kv[0] != "site")): v
            for (name, labels), v in outcome_samples(samples).items()
            if ("site", site) in labels
        }

    async def both() -> tuple[dict[Sample, float], dict[Sample, float]]:
        samples = await scrape_async(f"{deployment.worker_url}/metrics")
        return per_site(samples, "twin-fhir"), per_site(samples, "twin-native")

    def settled(pair: tuple[dict[Sample, float], dict[Sample, float]]) -> bool:
        # Each: two patients at risk (PVP and PKP cohorts), the fracture
        # counted, and the last pain score (PKP, month 6) in its VAS series.
        return all(
            sum_by(series, "spinewatch_outcome_denominator",
                   metric="complication_rate", operator="all") == 2
            and sum_by(series, "spinewatch_outcome_numerator",
                       metric="new_vertebral_fracture_rate", operator="all") == 1
            and sum_by(series, "spinewatch_vas_patients",
                       metric="vas_score", timepoint="month_6", operator="all") == 1
            for series in pair
        )  # fmt: skip

    from_fhir, from_native = await wait_until(both, settled, 60, "both twins counted")
    assert from_fhir == from_native
    # Not trivially equal: leakage, complications and VAS by timepoint are in it.
    names = {name for name, _ in from_fhir}
    assert len(from_fhir) >= 20, sorted(names)
    await _worker_counts_every_accepted_event(deployment)


async def test_without_broker_or_redis_nothing_is_accepted_and_readyz_names_why(
    deployment: Deployment, credentials: Credentials, kafka_bootstrap: str
) -> None:
    no_broker = gateway_settings(
        f"127.0.0.1:{free_port()}", deployment.redis_url, credentials, key_prefix="gw-nobroker"
    )
    async with running_gateway(no_broker, credentials, wait_ready=False) as gw:
        write = await gw.post("/v1/events", procedure(), by="north")
        ready = await health(gw.url)
        live = await health(gw.url, "healthz")
    assert write[0] == 503, write
    assert write[2]["status"] == "retry"
    assert "broker" in write[2]["reason"]
    assert int(write[1]["Retry-After"]) >= 1
    assert ready[0] == 503, ready
    assert any(r.startswith("broker: ") for r in failing(ready)), ready
    assert live[0] == 200, "a broker away is not a reason to restart the gateway"

    no_redis = gateway_settings(kafka_bootstrap, f"redis://127.0.0.1:{free_port()}/0", credentials)
    async with running_gateway(no_redis, credentials, wait_ready=False) as gw:
        ready = await wait_until(
            lambda: health(gw.url), lambda a: "broker" not in str(failing(a)), 30, "broker ok"
        )
        write = await gw.post("/v1/events", procedure(), by="north")
    assert ready[0] == 503, ready
    assert [r.split(":")[0] for r in failing(ready)] == ["redis"], ready
    assert (write[0], write[2]["status"]) == (503, "retry"), write


async def test_the_entrypoint_serves_its_check_passes_and_sigterm_ends_it(
    kafka_bootstrap: str, module_redis: str, credentials: Credentials, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SPINEWATCH_GATEWAY_KAFKA_BROKERS": kafka_bootstrap,
        "SPINEWATCH_GATEWAY_REDIS_URL": module_redis,
        "SPINEWATCH_GATEWAY_CREDENTIALS_FILE": str(credentials.path),
        "SPINEWATCH_GATEWAY_PORT": str(port),
        "SPINEWATCH_GATEWAY_APP_ID": f"e{uuid.uuid4().hex[:12]}",
    }
    command = [sys.executable, "-m", "spinewatch", "gateway"]
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)  # noqa: S603, ASYNC220
    try:

        async def probe() -> tuple[int, dict[str, Any]]:
            assert process.poll() is None, log_path.read_text()
            try:
                return await health(f"http://127.0.0.1:{port}", "healthz")
            except OSError:
                return 0, {}

        await wait_until(probe, lambda a: a[0] == 200, 30, "the gateway process to serve")
        checked = subprocess.run([*command, "--check"], env=env, capture_output=True, check=False)  # noqa: S603, ASYNC221
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, scaled(20))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert checked.returncode == 0, checked.stderr.decode()
    assert json.loads(checked.stdout)["status"] == "ok"
    assert code == 0, log_path.read_text()
