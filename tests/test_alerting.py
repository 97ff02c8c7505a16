"""The alerting service against a real Redis: outages, acknowledgement, two processes.

Drift messages are handed to the service directly (the Kafka path is the
end-to-end test's); receivers are a real HTTP webhook on loopback that can
be down, failing or up.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from spinewatch.adapters.receivers import AlertmanagerReceiver, Receiver, WebhookReceiver
from spinewatch.adapters.redis_alerts import RedisAlertStore
from spinewatch.alerting import service as alerting
from spinewatch.alerting.identities import Identities, OnCallGrant
from spinewatch.alerting.service import AlertingService
from spinewatch.alerting.settings import AlertingSettings
from spinewatch.contracts.drift import (
    DriftInControl,
    DriftSentinel,
    DriftSignalled,
    StratumBaseline,
)
from spinewatch.contracts.vocabulary import Indication, ProcedureType
from spinewatch.devservers.tansu import free_port
from spinewatch.domain.alerts import model as alert_model
from spinewatch.errors import CredentialsError
from spinewatch.runtime.credentials import CredentialStore, issue_token
from tests.support import scaled, wait_until

FINGERPRINT = "riverside.cement_leakage_rate_per_level.worse"


def _signal(signal_id: uuid.UUID | None = None, case: int = 454) -> DriftSignalled:
    return DriftSignalled(
        event_type="drift.signalled", schema_version=1, signal_id=signal_id or uuid.uuid4(),
        site_id="riverside", metric="cement_leakage_rate_per_level", unit="treated_level",
        direction="worse", odds_ratio=2.0, statistic=6.08, limit=5.96, arl0_cases=10_000,
        arl1_cases=115, case_number=case, signalled_on=date(2025, 8, 2),
        change_point_case_number=382, change_point_on=date(2025, 6, 28), cases_since_change=73,
        observed_events=22, expected_events=10.0,
        baselines=(StratumBaseline(
            procedure_type=ProcedureType.PVP, indication=Indication.HEMANGIOMA, cases=60,
            p0=3 / 28, p0_basis="published value", baseline_id="s000.leakage.per_level",
            described="3/28 (10.7%)", seed="000_a1714b1fef957ce0.txt", locator="Results",
            quote="We found paravertebral cement leakage in 3 cases", exact_cohort=True,
            arl0_cases=18_000, arl1_cases=162,
        ),),
    )  # fmt: skip


def _in_control(signal: DriftSignalled) -> DriftInControl:
    return DriftInControl(
        event_type="drift.in_control", schema_version=1, signal_id=signal.signal_id,
        site_id=signal.site_id, metric=signal.metric, direction=signal.direction,
        cases_since_signal=100, in_control_on=date(2025, 10, 1),
    )  # fmt: skip


class Webhook:
    """A real HTTP receiver on loopback; `status` sets what it answers."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.status = 200
        self.received: list[Any] = []  # webhook objects, or Alertmanager alert lists
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        # Alertmanager's push endpoint, served by the same stand-in.
        app.router.add_post("/api/v2/alerts", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _hook(self, request: web.Request) -> web.Response:
        if self.status == 200:
            self.received.append(await request.json())
        return web.Response(status=self.status, text="rejected: bad payload")

    def transitions(self) -> list[str]:
        return [payload["transition"] for payload in self.received]


@asynccontextmanager
async def _service(
    redis_url: str, webhook: Webhook, **overrides: Any
) -> AsyncIterator[AlertingService]:
    """One alerting 'process': its own Redis client, HTTP session and state."""
    settings = AlertingSettings(
        kafka_brokers="127.0.0.1:9", redis_url=redis_url, key_prefix="t", audit_topic=False,
        webhook_urls=(webhook.url,), retry_base_s=0.05, retry_max_s=0.2, lease_s=scaled(0.3),
        **overrides,
    )  # fmt: skip
    redis = Redis.from_url(redis_url, socket_timeout=scaled(2))
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=scaled(2)))
    receivers: list[Receiver] = [WebhookReceiver("webhook-0", webhook.url, session)]
    try:
        yield AlertingService(settings, RedisAlertStore(redis, "t"), receivers, CollectorRegistry())
    finally:
        await session.close()
        await redis.aclose()


async def _deliver_until(service: AlertingService, webhook: Webhook, count: int) -> None:
    async def delivered() -> int:
        await service.deliver_due()
        return len(webhook.received)

    await wait_until(delivered, lambda n: n >= count, 20, f"{count} deliveries")


async def test_an_episode_pages_once_and_resolves_once(redis_url: str) -> None:
    webhook = Webhook()
    await webhook.start()
    try:
        async with _service(redis_url, webhook) as service:
            signal = _signal()
            assert await service.handle(signal.model_dump_json().encode()) == "transition"
            # Redelivered, and a later signal of the same persisting episode.
            assert await service.handle(signal.model_dump_json().encode()) == "duplicate"
            assert await service.handle(_signal(case=600).model_dump_json().encode()) == "continued"
            await _deliver_until(service, webhook, 1)
            text = webhook.received[0]["text"]
            assert text.startswith("[FIRING] [warning] riverside: cement_leakage_rate_per_level")
            assert "s000.leakage.per_level" in text
            assert "estimated start 2025-06-28" in text
            # The return to control names the episode's latest signal.
            assert await service.handle(_in_control(signal).model_dump_json().encode()) == "stale"
            latest = (await service.store.alert(FINGERPRINT)).signal_id  # type: ignore[union-attr]
            resolution = _in_control(_signal(uuid.UUID(latest)))
            assert await service.handle(resolution.model_dump_json().encode()) == "transition"
            await _deliver_until(service, webhook, 2)
            await service.deliver_due()
            assert webhook.transitions() == ["firing", "resolved"]
            assert await service.handle(b'{"event_type": "drift.signalled"}') is None
    finally:
        await webhook.stop()


async def test_a_receiver_outage_loses_nothing_even_if_the_process_dies(redis_url: str) -> None:
    webhook = Webhook()  # not started yet: connection refused
    async with _service(redis_url, webhook) as first:
        assert await first.handle(_signal().model_dump_json().encode()) == "transition"
        assert await first.deliver_due() == 0
        failed = first.metrics.failed.labels("webhook-0", "retry")._value.get()
        assert failed == 1
        # The receiver comes back answering 503: still retried, not dropped.
        await webhook.start()
        webhook.status = 503

        async def retries() -> float:
            assert await first.deliver_due() == 0
            return float(first.metrics.failed.labels("webhook-0", "retry")._value.get())

        # Once the first backoff (0.05 s) is past, the 503 is a second failure.
        await wait_until(retries, lambda n: n >= 2, 5, "the retry answered 503")
        assert await first.store.pending_deliveries() == 1
        # The process claims the delivery and dies before sending it.
        soon = int(time.time() * 1000) + 500  # past any backoff still pending
        claimed = await first.store.claim_deliveries(soon, lease_ms=300)
        assert len(claimed) == 1
    webhook.status = 200
    try:
        async with _service(redis_url, webhook) as second:  # a new process, same Redis
            await _deliver_until(second, webhook, 1)  # after the dead process's lease
            assert webhook.transitions() == ["firing"]
            assert await second.store.pending_deliveries() == 0
    finally:
        await webhook.stop()


async def test_a_4xx_is_logged_and_not_retried(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    webhook = Webhook()
    await webhook.start()
    webhook.status = 400
    try:
        async with _service(redis_url, webhook) as service:
            await service.handle(_signal().model_dump_json().encode())
            await service.deliver_due()
            assert await service.store.pending_deliveries() == 0
            assert service.metrics.failed.labels("webhook-0", "rejected")._value.get() == 1
            assert "rejected: bad payload" in caplog.text
    finally:
        await webhook.stop()


@asynccontextmanager
async def _serving(app: web.Application) -> AsyncIterator[str]:
    """`app` on a free loopback port, for real HTTP requests; its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _credentials(tmp_path: Path, **users: str) -> tuple[Identities, dict[str, str]]:
    """A credentials file of one token per on-call user, as `spinewatch token new` writes it."""
    tokens, tables = {}, []
    for name, user in users.items():
        issued = issue_token()
        tokens[name] = issued.token
        tables.append(f'[[token]]\nid = "{issued.token_id}"\nsha256 = "{issued.sha256}"\n'
                      f'user = "{user}"\n')  # fmt: skip
    path = tmp_path / "alerting-credentials.toml"
    path.write_text("\n".join(tables))
    return Identities(CredentialStore.from_file(path, OnCallGrant)), tokens


async def test_only_an_authenticated_user_acknowledges_and_the_identity_is_recorded(
    redis_url: str, tmp_path: Path
) -> None:
    identities, tokens = _credentials(tmp_path, oncall="dr-oncall", other="dr-other")
    unknown = issue_token().token  # well-formed, in no credentials file
    webhook = Webhook()
    await webhook.start()
    try:
        async with _service(redis_url, webhook) as service:
            await service.handle(_signal().model_dump_json().encode())
            url = f"/alerts/{FINGERPRINT}/ack"
            async with (
                _serving(service.http_app(identities)) as base,
                aiohttp.ClientSession(base_url=base) as http,
            ):

                def bearer(token: str) -> dict[str, str]:
                    return {"Authorization": f"Bearer {token}"}

                # The acknowledgement of issue 17: anyone, under any name.
                async with http.post(url, json={"by": "mallory-anonymous"}) as anonymous:
                    assert anonymous.status == 401
                    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer ")
                    assert (await anonymous.json())["reason"] == "missing"
                async with http.post(url, headers=bearer(unknown)) as forged:
                    assert forged.status == 401
                    assert 'error="invalid_token"' in forged.headers["WWW-Authenticate"]
                async with http.post(url, headers={"Authorization": "Basic dXNlcjpwdw=="}) as basic:
                    assert basic.status == 401
                async with http.get("/alerts") as listing:
                    assert listing.status == 401  # reading alerts needs an identity too
                # A name in the body is refused, not silently overruled.
                named = {"by": "mallory-anonymous"}
                async with http.post(url, json=named, headers=bearer(tokens["oncall"])) as body:
                    assert body.status == 400
                    refused = await body.json()
                    assert [f["field"] for f in refused["fields"]] == ["by"]
                    assert "mallory" not in json.dumps(refused)  # the value is never echoed
                # Nothing of that acknowledged, nor reached the pager.
                assert (await service.store.alert(FINGERPRINT)).acknowledged_by is None  # type: ignore[union-attr]
                async with http.post(url, headers=bearer(tokens["oncall"])) as ok:
                    assert (ok.status, (await ok.json())["outcome"]) == (200, "transition")
                # A second acknowledgement records nothing: the investigation moved on
                # (409, with its status and the step allowed next).
                async with http.post(url, headers=bearer(tokens["other"])) as again:
                    assert again.status == 409
                    assert (await again.json()) | {"error": ""} == {
                        "outcome": "duplicate", "error": "", "status": "acknowledged",
                        "allowed": "investigate",
                    }  # fmt: skip
                async with http.post("/alerts/nope/ack", headers=bearer(tokens["other"])) as gone:
                    assert gone.status == 404
                async with http.get("/alerts", headers=bearer(tokens["other"])) as listing:
                    (alert,) = await listing.json()
                    assert alert["acknowledged_by"] == "dr-oncall"
                for open_path in ("/metrics", "/healthz", "/readyz"):
                    async with http.get(open_path) as answer:
                        assert answer.status == 200, open_path
            await _deliver_until(service, webhook, 2)
            assert sorted(webhook.transitions()) == ["acknowledged", "firing"]
            ack = next(p for p in webhook.received if p["transition"] == "acknowledged")
            assert ack["text"].endswith("(by dr-oncall)")
            assert "mallory" not in str(webhook.received)
            refused = {
                reason: service.registry.get_sample_value(
                    "spinewatch_api_requests_refused_total", {"reason": reason}
                )
                for reason in ("missing", "invalid_token")
            }
            assert refused == {"missing": 2, "invalid_token": 2}
    finally:
        await webhook.stop()


async def test_a_proxy_user_header_is_believed_only_from_the_trusted_proxy(
    redis_url: str,
) -> None:
    webhook = Webhook()
    async with _service(redis_url, webhook) as service:
        await service.handle(_signal().model_dump_json().encode())
        url = f"/alerts/{FINGERPRINT}/ack"
        # The test's own address is not the proxy's: the header is anyone's.
        elsewhere = Identities(proxy_header="X-Forwarded-User", proxies=[ip_network("10.0.0.0/8")])
        async with (
            _serving(service.http_app(elsewhere)) as base,
            aiohttp.ClientSession(base_url=base) as http,
            http.post(url, headers={"X-Forwarded-User": "dr-proxy"}) as untrusted,
        ):
            assert untrusted.status == 401
            assert (await untrusted.json())["reason"] == "untrusted_proxy"
        loopback = Identities(proxy_header="X-Forwarded-User", proxies=[ip_network("127.0.0.1")])
        async with (
            _serving(service.http_app(loopback)) as base,
            aiohttp.ClientSession(base_url=base) as http,
        ):
            async with http.post(url, headers={"X-Forwarded-User": "Dr Proxy; DROP"}) as bad:
                assert (bad.status, (await bad.json())["reason"]) == (401, "invalid_user")
            async with http.post(url) as missing:
                assert missing.status == 401
            async with http.post(url, headers={"X-Forwarded-User": "dr-proxy"}) as ok:
                assert (ok.status, (await ok.json())["outcome"]) == (200, "transition")
        assert (await service.store.alert(FINGERPRINT)).acknowledged_by == "dr-proxy"  # type: ignore[union-attr]


def test_identity_settings_are_checked_before_anything_starts(tmp_path: Path) -> None:
    def settings(**fields: Any) -> AlertingSettings:
        return AlertingSettings(kafka_brokers="127.0.0.1:9", **fields)

    with pytest.raises(ValidationError, match="go together"):
        settings(trusted_proxy_header="X-Forwarded-User")
    with pytest.raises(ValidationError, match="go together"):
        settings(trusted_proxies=["10.0.0.1"])
    with pytest.raises(ValidationError) as caught:
        settings(trusted_proxy_header="X-Forwarded-User", trusted_proxies=["proxy-4711"])
    assert "proxy-4711" not in str(caught.value.errors(include_input=False))
    proxied = settings(trusted_proxy_header="X-Forwarded-User", trusted_proxies=["10.0.4.0/24"])
    assert Identities.from_settings(proxied).configured
    assert not Identities.from_settings(settings()).configured
    # A user that is free text, not a code: the file is refused, naming the table and field.
    bad = tmp_path / "credentials.toml"
    issued = issue_token()
    bad.write_text(
        f'[[token]]\nid = "{issued.token_id}"\nsha256 = "{issued.sha256}"\nuser = "Dr Jones"\n'
    )
    with pytest.raises(CredentialsError, match=r"token\[0\]: user \(string_pattern_mismatch\)"):
        Identities.from_settings(settings(credentials_file=bad))


async def test_two_alerting_processes_page_once(redis_url: str) -> None:
    webhook = Webhook()
    await webhook.start()
    try:
        async with _service(redis_url, webhook) as one, _service(redis_url, webhook) as two:
            signal = _signal().model_dump_json().encode()
            outcomes = await asyncio.gather(one.handle(signal), two.handle(signal))
            assert sorted(o or "" for o in outcomes) == ["duplicate", "transition"]

            async def both_deliver() -> int:
                await asyncio.gather(one.deliver_due(), two.deliver_due())
                return len(webhook.received)

            await wait_until(both_deliver, lambda n: n >= 1, 20, "the page")
            for _ in range(5):  # and nothing more, however often both look
                await both_deliver()
            assert webhook.transitions() == ["firing"]
    finally:
        await webhook.stop()


async def test_a_sentinel_event_pages_critical_once_for_good(redis_url: str) -> None:
    webhook = Webhook()
    await webhook.start()
    sentinel = DriftSentinel(
        event_type="drift.sentinel", schema_version=1, sentinel_id=uuid.uuid4(),
        site_id="riverside", metric="pulmonary_cement_embolism_rate",
        procedure_type=ProcedureType.PVP, indication=Indication.HEMANGIOMA,
        occurred_on=date(2025, 3, 2),
    )  # fmt: skip
    raw = sentinel.model_dump_json().encode()
    try:
        async with _service(redis_url, webhook) as service:
            assert await service.handle(raw) == "transition"
            await _deliver_until(service, webhook, 1)
            text = webhook.received[0]["text"]
            assert text.startswith("[FIRING] [critical] riverside: pulmonary cement embolism")
            assert webhook.received[0]["alert"]["labels"]["alertname"] == "SpinewatchSentinelEvent"
            # A rebuilt engine re-announces it: never a second page, however late.
            assert await service.handle(raw) == "duplicate"
            seen = f"t:seen:{sentinel.sentinel_id}"
            assert await service.store.redis.ttl(seen) == -1  # kept for good
            await service.deliver_due()
            assert webhook.transitions() == ["firing"]
    finally:
        await webhook.stop()


async def test_firing_alerts_are_re_sent_to_alertmanager_until_resolved(redis_url: str) -> None:
    webhook = Webhook()
    await webhook.start()
    try:
        async with _service(redis_url, webhook, resend_interval_s=0.5) as service:
            base = f"http://127.0.0.1:{webhook.port}"
            session = aiohttp.ClientSession()
            service.receivers = {"alertmanager-0": AlertmanagerReceiver(
                "alertmanager-0", base, session, resend_interval_s=0.5
            )}  # fmt: skip
            try:
                signal = _signal()
                await service.handle(signal.model_dump_json().encode())
                await service.refresh_gauges()
                assert service.metrics.firing.labels("warning")._value.get() == 1

                async def pushes() -> int:
                    await service.resend_due()
                    await service.deliver_due()
                    return len(webhook.received)

                # The first push, then re-sends on Alertmanager's schedule.
                await wait_until(pushes, lambda n: n >= 3, 20, "two re-sends")
                labels = {tuple(sorted(p[0]["labels"].items())) for p in webhook.received}
                assert len(labels) == 1  # the same alert each time
                ends = [p[0]["endsAt"] for p in webhook.received]
                assert ends == sorted(ends)  # each re-send pushes endsAt forward
                assert ends[-1] > ends[0]
                # Resolved: one last push with endsAt now, then no more re-sends.
                await service.handle(_in_control(signal).model_dump_json().encode())
                count = await wait_until(pushes, lambda n: n >= 4, 20, "the resolution")
                start = time.monotonic()
                while time.monotonic() - start < 1.2:  # over two re-send intervals
                    assert await pushes() == count
                    await asyncio.sleep(0.1)
                await service.refresh_gauges()
                assert service.metrics.firing.labels("warning")._value.get() == 0
            finally:
                await session.close()
    finally:
        await webhook.stop()


async def test_a_message_that_cannot_be_recorded_is_skipped_loudly_a_redis_fault_is_not(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    doomed = _signal()

    def failing_alert(message: DriftSignalled, *args: Any) -> Any:
        if message.signal_id == doomed.signal_id:
            raise ValueError("a bug in building this one alert")
        return build(message, *args)

    build = alert_model.alert_from_signal
    monkeypatch.setattr(alerting, "alert_from_signal", failing_alert)
    webhook = Webhook()
    async with _service(redis_url, webhook) as service:
        # Before: any such error restarted the consumer on the same record,
        # for good, and no page behind it went out.
        assert await service.handle(doomed.model_dump_json().encode()) is None
        skipped = service.registry.get_sample_value(
            "spinewatch_drift_messages_skipped_total", {"error": "ValueError"}
        )
        assert skipped == 1
        assert await service.handle(_signal().model_dump_json().encode()) == "transition"
    # Redis unreachable: raised, so the consumer restarts and reads it again.
    async with _service(f"redis://127.0.0.1:{free_port()}/0", webhook) as down:
        with pytest.raises(RedisConnectionError):
            await down.handle(_signal().model_dump_json().encode())
        runner = web.AppRunner(down.http_app(Identities()))  # /metrics needs no identity
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/metrics") as scrape,
            ):
                assert scrape.status == 200  # was a 500 while Redis was down
                assert "spinewatch_drift_messages_skipped_total" in await scrape.text()
        finally:
            await runner.cleanup()
