"""Kafka TLS and SASL settings: validation, what each client is given, and that every client is.

Tansu 0.6.0 (the embedded broker) cannot serve an authenticated listener
here: with `--authentication` it refuses the unauthenticated request that
creates the first SCRAM user, its only storage in this build is memory,
and TLS via `--cert` did not accept a handshake (tried). So the broker
side is covered by one network check (a SASL client really performs the
handshake, and the broker's refusal stops it), and the client side by
what faust and aiokafka are handed, read back through faust's own code.
"""

from __future__ import annotations

import ast
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka.errors import KafkaConnectionError
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from spinewatch.adapters.kafka_lag import LagProbe
from spinewatch.adapters.kafka_security import KafkaSecurity
from spinewatch.alerting.settings import AlertingSettings
from spinewatch.engine.app import _faust_config
from spinewatch.engine.settings import Settings
from tests import tls_material
from tests.support import TEST_SIGNING_KEY

PACKAGE = Path(__file__).resolve().parents[1] / "services" / "spinewatch"
PASSWORD = "s3cret-broker-password"  # noqa: S105 - a test value, checked never to leak


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    files = {
        "ca": tls_material.CA_PEM,
        "cert": tls_material.CLIENT_CERT_PEM,
        "key": tls_material.CLIENT_KEY_PEM,
        "encrypted_key": tls_material.CLIENT_KEY_ENCRYPTED_PEM,
    }
    paths = {}
    for name, text in files.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_text(text)
    return paths


def _sasl(protocol: str = "SASL_PLAINTEXT", mechanism: str = "SCRAM-SHA-512", **more: Any) -> Any:
    return KafkaSecurity(
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="spinewatch-worker",
        kafka_sasl_password=PASSWORD,
        **more,
    )


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    security = KafkaSecurity()
    assert security.aiokafka_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert security.faust_credentials() is None
    assert security.risks() == []


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_reaches_aiokafka_directly_and_through_faust_alike(mechanism: str) -> None:
    security = _sasl(mechanism=mechanism)
    expected = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "spinewatch-worker",
        "sasl_plain_password": PASSWORD,
    }
    assert security.aiokafka_kwargs() == expected
    # What faust-streaming 0.15.3 gives its consumer, producer and admin client.
    through_faust = dict(credentials_to_aiokafka_auth(security.faust_credentials()))
    assert through_faust == expected | {"ssl_context": None}
    assert PASSWORD not in repr(security)
    assert PASSWORD not in str(security.faust_credentials())


def test_sasl_ssl_verifies_the_broker_with_the_ca_and_presents_a_client_certificate(
    pem: dict[str, Path],
) -> None:
    security = _sasl(
        "SASL_SSL",
        kafka_ssl_cafile=pem["ca"],
        kafka_ssl_certfile=pem["cert"],
        kafka_ssl_keyfile=pem["encrypted_key"],
        kafka_ssl_key_password=tls_material.CLIENT_KEY_PASSPHRASE,
    )
    kwargs = security.aiokafka_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert "spinewatch test CA" in str(context.get_ca_certs())
    through_faust = dict(credentials_to_aiokafka_auth(security.faust_credentials()))
    assert through_faust["security_protocol"] == "SASL_SSL"
    assert isinstance(through_faust["ssl_context"], ssl.SSLContext)


def test_ssl_alone_and_the_hostname_check_turned_off(pem: dict[str, Path]) -> None:
    security = KafkaSecurity(
        kafka_security_protocol="SSL", kafka_ssl_cafile=pem["ca"], kafka_ssl_check_hostname=False
    )
    context = security.aiokafka_kwargs()["ssl_context"]
    assert not context.check_hostname
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert credentials_to_aiokafka_auth(security.faust_credentials())["security_protocol"] == "SSL"
    assert security.risks() == [
        "Kafka TLS without the hostname check: any certificate of the CA is accepted"
    ]
    assert "in clear" in _sasl(mechanism="PLAIN").risks()[0]


def test_a_wrong_key_passphrase_fails_when_the_clients_are_built(pem: dict[str, Path]) -> None:
    security = KafkaSecurity(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pem["ca"],
        kafka_ssl_certfile=pem["cert"],
        kafka_ssl_keyfile=pem["encrypted_key"],
        kafka_ssl_key_password="not-the-passphrase",  # noqa: S106 - a test value  # noqa: S106
    )
    with pytest.raises(ssl.SSLError):
        security.aiokafka_kwargs()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs kafka_sasl_mechanism, kafka_sasl_username"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN",
             "kafka_sasl_username": "u"},
            "needs kafka_sasl_password",
        ),
        ({"kafka_sasl_username": "u", "kafka_sasl_password": PASSWORD}, "would be ignored"),
        ({"kafka_security_protocol": "SSL", "kafka_sasl_mechanism": "PLAIN"}, "would be ignored"),
        ({"kafka_ssl_check_hostname": True, "kafka_ssl_cafile": "CA"}, "would be ignored"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "KEY"}, "need kafka_ssl_certfile"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent.pem"}, "file"),
        ({"kafka_security_protocol": "TLS"}, "PLAINTEXT"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"}, "SCRAM"),
    ],
)  # fmt: skip
def test_incoherent_settings_are_refused_naming_fields_never_values(
    pem: dict[str, Path], fields: dict[str, Any], message: str
) -> None:
    files = {"CA": str(pem["ca"]), "KEY": str(pem["key"])}
    values = {name: files.get(value, value) for name, value in fields.items()}
    with pytest.raises(ValidationError) as caught:
        KafkaSecurity(**values)
    text = str(caught.value.errors(include_input=False, include_url=False))
    assert message in text
    assert PASSWORD not in text


def test_tls_needs_a_ca_when_the_system_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = ssl.DefaultVerifyPaths("/nonexistent/ca.pem", "/nonexistent", "", "", "", "")
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: nowhere)
    with pytest.raises(ValidationError, match="set kafka_ssl_cafile"):
        KafkaSecurity(kafka_security_protocol="SSL")


def test_each_service_reads_the_fields_from_its_own_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for prefix in ("SPINEWATCH_", "SPINEWATCH_ALERTING_"):
        monkeypatch.setenv(f"{prefix}KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
        monkeypatch.setenv(f"{prefix}KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
        monkeypatch.setenv(f"{prefix}KAFKA_SASL_USERNAME", prefix.lower())
        monkeypatch.setenv(f"{prefix}KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("SPINEWATCH_ALERTING_KAFKA_BROKERS", "kafka:9092")
    worker = Settings(kafka_brokers="kafka:9092", signing_key=TEST_SIGNING_KEY)
    alerting = AlertingSettings(signing_key=TEST_SIGNING_KEY)
    assert worker.kafka_security.aiokafka_kwargs()["sasl_plain_username"] == "spinewatch_"
    assert (
        alerting.kafka_security.aiokafka_kwargs()["sasl_plain_username"] == "spinewatch_alerting_"
    )
    # The faust app of the worker is built with them.
    app = faust.App("t-security", **_faust_config(worker, "kafka:9092", tansu_compat=False))
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert auth["sasl_plain_password"] == PASSWORD


async def test_a_sasl_client_really_asks_the_broker_for_sasl(kafka_bootstrap: str) -> None:
    """The settings reach the wire: Tansu, serving no SASL, refuses the handshake."""
    plain = LagProbe(kafka_bootstrap, "t-security", ("t-security",))
    await plain.start()
    await plain.stop()
    sasl = LagProbe(kafka_bootstrap, "t-security", ("t-security",), security=_sasl())
    with pytest.raises(KafkaConnectionError):
        await sasl.start()
    await sasl.stop()


# Constructors of Kafka clients, and the helpers that build them for a service.
_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "App"}
_HELPERS = {"ensure_topics", "LagProbe"}
# Talks only to the broker it started itself (no listener security to match).
_EXEMPT = {"devservers/tansu.py"}


def test_every_kafka_client_in_the_package_is_given_the_security_settings() -> None:
    """Static: a client built without them would connect PLAINTEXT, silently."""
    found: list[str] = []
    unsecured: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = str(path.relative_to(PACKAGE))
        if where in _EXEMPT:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in _CLIENTS:
                found.append(f"{where}:{node.lineno} {name}")
                if not any(k.arg is None for k in node.keywords):  # a `**kwargs` argument
                    unsecured.append(f"{where}:{node.lineno} {name}")
            elif name in _HELPERS and path.name not in ("kafka_admin.py", "kafka_lag.py"):
                found.append(f"{where}:{node.lineno} {name}")
                if not any(k.arg == "security" for k in node.keywords):
                    unsecured.append(f"{where}:{node.lineno} {name}")
    assert len(found) >= 8, found  # the walk does find the clients
    assert unsecured == []
