"""The gateway's pure parts: token issuing, settings, authorisation, answers."""

from __future__ import annotations

import asyncio
import io
import socket
import tomllib
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import ValidationError

from spinewatch.cli.main import main as cli_main
from spinewatch.cli.token import TokenRequestError, new_token
from spinewatch.contracts import parse_event
from spinewatch.errors import FieldError, UnknownSetting
from spinewatch.gateway.auth import Refusal, SourceGrant, authorise, load_credentials
from spinewatch.gateway.intake import Candidate, Outcome, Result, examine
from spinewatch.gateway.main import main as gateway_main
from spinewatch.gateway.process import _listening_socket
from spinewatch.gateway.producer import EventProducer
from spinewatch.gateway.settings import GatewaySettings
from tests.samples import sample_messages

GRANT = SourceGrant(source="ris-demo", sites=("demo-north", "demo-south"))


def test_a_new_gateway_token_authenticates_as_its_grant_and_is_printed_once(
    tmp_path: Path,
) -> None:
    out = io.StringIO()
    new_token(out, source="ris-north", sites=["north-a", "north-b"], rate_per_minute=120)
    text = out.getvalue()
    token = next(line for line in text.splitlines() if line.startswith("swt_"))
    stanza = text[text.index("[[token]]") :]
    path = tmp_path / "credentials.toml"
    path.write_text(stanza, encoding="utf-8")

    store = load_credentials(path)
    assert store.authenticate(token) == SourceGrant(
        source="ris-north", sites=("north-a", "north-b"), rate_per_minute=120
    )
    assert text.count(token) == 1
    assert token not in stanza
    assert tomllib.loads(stanza)["token"][0]["sites"] == ["north-a", "north-b"]


def test_token_requests_are_checked_before_a_token_is_issued(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = io.StringIO()
    new_token(out, user="alice")
    assert 'user = "alice"' in out.getvalue()
    bad: dict[str, Any]
    for bad in (
        {"source": "Not A Slug", "sites": ["north-a"]},
        {"source": "ris-north", "sites": []},
        {"user": "alice", "source": "ris-north"},
        {"user": "Alice Smith"},
        {"user": "alice\n"},  # `$` before a newline must not pass
    ):
        with pytest.raises(TokenRequestError):
            new_token(io.StringIO(), **bad)
    assert cli_main(["token", "new", "--source", "ris-north"]) == 2
    assert "swt_" not in capsys.readouterr().out


def test_an_event_is_authorised_only_for_its_grants_source_and_sites() -> None:
    event = parse_event(sample_messages()[0])  # ris-demo at demo-north
    assert authorise(GRANT, event) is None
    other_site = authorise(SourceGrant(source="ris-demo", sites=("demo-south",)), event)
    other_source = authorise(SourceGrant(source="ris-other", sites=("demo-north",)), event)
    assert other_site is not None
    assert other_site.code is Refusal.SITE_NOT_GRANTED
    assert other_source is not None
    assert other_source.code is Refusal.WRONG_SOURCE
    # The reason names the credential's own grant, never the event's values.
    assert "demo-north" not in other_site.reason
    assert "ris-demo" not in other_source.reason


def test_the_content_digest_ignores_spelling_but_not_content() -> None:
    raw = sample_messages()[0]
    respelled = raw.replace(b",", b" ,\n  ")
    first, second = examine(raw, GRANT, 1 << 16), examine(respelled, GRANT, 1 << 16)
    changed = examine(raw.replace(b'"pre_vas":7.5', b'"pre_vas":7.0'), GRANT, 1 << 16)
    assert isinstance(first, Candidate)
    assert isinstance(second, Candidate)
    assert isinstance(changed, Candidate)
    assert first.key == second.key
    assert changed.key.event_id == first.key.event_id
    assert changed.key.digest != first.key.digest


def test_rejected_answers_carry_field_errors_and_never_values() -> None:
    answer = examine(b'{"event_id": "Jane Doe", "event_type": "procedure.performed"}', GRANT, 1024)
    assert isinstance(answer, Result)
    assert answer.outcome is Outcome.REJECTED
    body = answer.as_json()
    assert body["status"] == "rejected"
    by_field = {e["loc"]: e for e in body["errors"]}
    assert by_field["event_id"]["type"] == "uuid_parsing"
    assert all(set(e) == {"loc", "type", "msg"} for e in body["errors"])
    assert "Jane" not in str(body)
    too_big = examine(sample_messages()[0], GRANT, 100)
    assert isinstance(too_big, Result)
    assert too_big.errors == (FieldError("<root>", "too_large", "the event exceeds 100 bytes"),)


def test_settings_refuse_unknown_variables_and_short_pseudonym_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(
            kafka_brokers="127.0.0.1:9092",
            credentials_file=tmp_path / "c.toml",
            pseudonym_key="short",
        )
    secret = f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("SPINEWATCH_GATEWAY_KAFKA_BROKERS", "127.0.0.1:9092")
    monkeypatch.setenv("SPINEWATCH_GATEWAY_CREDENTIALS_FILE", str(tmp_path / "c.toml"))
    monkeypatch.setenv("SPINEWATCH_GATEWAY_MAX_BATCH_EVENT", secret)
    with pytest.raises(UnknownSetting) as unknown:
        GatewaySettings()
    assert "SPINEWATCH_GATEWAY_MAX_BATCH_EVENTS" in str(unknown.value)
    assert gateway_main(check_only=False) == 2
    monkeypatch.delenv("SPINEWATCH_GATEWAY_MAX_BATCH_EVENT")
    monkeypatch.setenv("SPINEWATCH_GATEWAY_PSEUDONYM_KEY", secret[:10])
    assert gateway_main(check_only=False) == 2
    monkeypatch.delenv("SPINEWATCH_GATEWAY_PSEUDONYM_KEY")
    # A credentials file that cannot be read stops start-up too, before anything runs.
    assert gateway_main(check_only=False) == 2
    err = capsys.readouterr().err
    assert secret not in err
    assert secret[:10] not in err
    assert "c.toml" in err


def test_the_listening_socket_disables_nagle() -> None:
    # Without TCP_NODELAY a kept-alive request waited for the client's
    # delayed ACK (40 ms, benchmarks/gateway.py); accepted sockets inherit it.
    sock = _listening_socket("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        sock.close()


class _StubClient:
    """aiokafka's `send`: a delivery future per record, or an error before sending."""

    def __init__(self, fates: list[str]) -> None:
        self.fates = fates
        self.deliveries: list[asyncio.Future[object]] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[object]:
        fate = self.fates[len(self.deliveries)]
        delivery: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        if fate == "too_large":
            raise ValueError(value)  # the producer's refusal must not quote the record
        if fate == "acked":
            delivery.set_result(object())
        elif fate == "refused":
            delivery.set_exception(ConnectionError(value))
        return delivery  # "silent": never answered


async def test_a_record_is_written_only_when_the_broker_acknowledged_that_record(
    tmp_path: Path,
) -> None:
    settings = GatewaySettings(
        kafka_brokers="127.0.0.1:9092", credentials_file=tmp_path / "c.toml",
        produce_timeout_s=0.2,
    )  # fmt: skip
    producer = EventProducer(settings)
    client = _StubClient(["acked", "refused", "silent", "too_large", "acked"])
    producer.client = cast(Any, client)
    records = [(uuid.uuid4(), f"value-{i}".encode()) for i in range(5)]

    fates = await producer.send_all(records)

    assert fates[0] is None
    assert fates[4] is None
    assert [str(f) for f in fates[1:4]] == [
        "the broker refused the write (ConnectionError)",
        "no acknowledgement within the produce timeout",
        "the broker refused the write (ValueError)",
    ]
    assert client.deliveries[2].cancelled(), "an unanswered record is abandoned"
    assert producer._failing_since is None, "writes are getting through"
    producer.client = cast(Any, _StubClient(["refused"]))
    assert [str(f) for f in await producer.send_all(records[:1])] == [
        "the broker refused the write (ConnectionError)"
    ]
    assert producer._failing_since is not None, "nothing got through: writes are failing"
