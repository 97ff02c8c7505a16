"""How every Kafka client of spinewatch authenticates and encrypts: TLS and SASL.

One model, `KafkaSecurity`, holds the client side of a broker's listener:

| `kafka_security_protocol` | what the client does                                      |
| ------------------------- | --------------------------------------------------------- |
| `PLAINTEXT` (default)     | nothing: only on a private network, or the embedded broker |
| `SSL`                     | TLS, the broker's certificate checked against a CA; mutual |
|                           | TLS when a client certificate is given                    |
| `SASL_PLAINTEXT`          | SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) without TLS    |
| `SASL_SSL`                | SASL inside TLS: what a production cluster should offer   |

Each service's settings inherit the fields, so they are read from the
service's own namespace (`SPINEWATCH_KAFKA_SECURITY_PROTOCOL` for the
worker, `SPINEWATCH_ALERTING_KAFKA_...`, `SPINEWATCH_GATEWAY_KAFKA_...`)
and checked, as a whole, before anything starts: a SASL protocol without a
mechanism and credentials, credentials that a PLAINTEXT or SSL listener
would silently ignore, TLS files that a non-TLS protocol would ignore, or
TLS with no CA at all are settings errors, not a client that connects
unauthenticated or cannot verify the broker.

`aiokafka_kwargs()` is what every aiokafka producer, consumer and admin
client is built with; `faust_credentials()` is the same for the worker's
faust app. faust-streaming 0.15.3 turns its credentials back into exactly
these aiokafka arguments (`credentials_to_aiokafka_auth`: SASLCredentials
give `sasl_mechanism` and `sasl_plain_username/password`, which aiokafka
uses for SCRAM as well as PLAIN; a TLS context makes it SASL_SSL), for its
consumer, its producer and the client that creates its topics.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

from aiokafka.helpers import create_ssl_context
from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, model_validator

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

_SASL = ("SASL_PLAINTEXT", "SASL_SSL")
_TLS = ("SSL", "SASL_SSL")


class KafkaSecurity(BaseModel):
    """The client side of a broker listener's security (see the module docstring).

    Field names carry the `kafka_` prefix because each service's settings
    inherit them: the environment variable is the service's prefix plus
    the field name, and errors name it that way.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT",
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, as the broker's listener.",
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_* only)."
    )
    kafka_sasl_username: str | None = Field(
        default=None, min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$"
    )
    kafka_sasl_password: SecretStr | None = Field(default=None, min_length=1, max_length=1024)
    kafka_ssl_cafile: FilePath | None = Field(
        default=None,
        description="PEM CA bundle the broker's certificate is checked against; "
        "unset: the system's CAs.",
    )
    kafka_ssl_certfile: FilePath | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS."
    )
    kafka_ssl_keyfile: FilePath | None = Field(
        default=None, description="Its private key (PEM), if not in the certificate file."
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, description="Passphrase of an encrypted private key."
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True,
        description="Check that the broker's certificate names the address dialled. "
        "Turn off only for brokers reached by an address their certificates lack.",
    )

    @model_validator(mode="after")
    def _coherent(self) -> KafkaSecurity:
        problems = _problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- what the clients are given ---------------------------------------------------
    @property
    def uses_sasl(self) -> bool:
        return self.kafka_security_protocol in _SASL

    @property
    def uses_tls(self) -> bool:
        return self.kafka_security_protocol in _TLS

    @property
    def kafka_security(self) -> KafkaSecurity:
        """These fields alone (a service's settings hand them to its Kafka adapters)."""
        return KafkaSecurity.model_validate(
            {name: getattr(self, name) for name in KafkaSecurity.model_fields}
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of a TLS protocol (CA, client certificate, hostname check)."""
        if not self.uses_tls:
            return None
        password = self.kafka_ssl_key_password
        context = cast(
            "ssl.SSLContext",
            create_ssl_context(
                cafile=self.kafka_ssl_cafile,
                certfile=self.kafka_ssl_certfile,
                keyfile=self.kafka_ssl_keyfile,
                password=password.get_secret_value() if password is not None else None,
            ),
        )
        # The certificate itself is always verified (CERT_REQUIRED stays).
        context.check_hostname = self.kafka_ssl_check_hostname
        return context

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        kwargs: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.uses_sasl:
            kwargs |= {
                "sasl_mechanism": self.kafka_sasl_mechanism,
                "sasl_plain_username": self.kafka_sasl_username,
                "sasl_plain_password": self.sasl_password_text(),
            }
        return kwargs

    def faust_credentials(self) -> Any:
        """`broker_credentials` for faust.App: None, SSLCredentials or SASLCredentials."""
        import faust  # noqa: PLC0415 - only the worker loads faust

        context = self.ssl_context()
        if self.uses_sasl:
            return faust.SASLCredentials(
                username=self.kafka_sasl_username,
                password=self.sasl_password_text(),
                mechanism=self.kafka_sasl_mechanism,
                ssl_context=context,  # given: SASL_SSL; None: SASL_PLAINTEXT
            )
        if context is not None:
            return faust.SSLCredentials(context)
        return None

    def sasl_password_text(self) -> str | None:
        secret = self.kafka_sasl_password  # present with SASL: the validator checks
        return None if secret is None else secret.get_secret_value()

    def risks(self) -> list[str]:
        """What a valid but weak configuration exposes, for one warning at start-up."""
        found = []
        if (
            self.kafka_security_protocol == "SASL_PLAINTEXT"
            and self.kafka_sasl_mechanism == "PLAIN"
        ):
            found.append(
                "Kafka SASL/PLAIN without TLS sends the password in clear: use SASL_SSL, "
                "or a SCRAM mechanism"
            )
        if self.uses_tls and not self.kafka_ssl_check_hostname:
            found.append(
                "Kafka TLS without the hostname check: any certificate of the CA is accepted"
            )
        return found


def _problems(security: KafkaSecurity) -> list[str]:
    """Every incoherence, each naming the fields (never a value)."""
    protocol = security.kafka_security_protocol
    sasl_fields = {
        "kafka_sasl_mechanism": security.kafka_sasl_mechanism,
        "kafka_sasl_username": security.kafka_sasl_username,
        "kafka_sasl_password": security.kafka_sasl_password,
    }
    tls_fields = {
        "kafka_ssl_cafile": security.kafka_ssl_cafile,
        "kafka_ssl_certfile": security.kafka_ssl_certfile,
        "kafka_ssl_keyfile": security.kafka_ssl_keyfile,
        "kafka_ssl_key_password": security.kafka_ssl_key_password,
    }
    problems: list[str] = []
    if protocol in _SASL:
        missing = [name for name, value in sasl_fields.items() if value is None]
        if missing:
            problems.append(f"kafka_security_protocol {protocol} needs {', '.join(missing)}")
    else:
        problems += _ignored(sasl_fields, protocol, "SASL_SSL (or SASL_PLAINTEXT)")
    if protocol not in _TLS:
        return problems + _ignored(tls_fields, protocol, "SSL or SASL_SSL")
    client_key = security.kafka_ssl_keyfile or security.kafka_ssl_key_password
    if client_key is not None and security.kafka_ssl_certfile is None:
        problems.append(
            "kafka_ssl_keyfile and kafka_ssl_key_password need kafka_ssl_certfile "
            "(the client certificate)"
        )
    if security.kafka_ssl_cafile is None and not _system_cas():
        problems.append(
            f"kafka_security_protocol {protocol} needs a CA to check the broker against: "
            "set kafka_ssl_cafile (this system has no default CA bundle)"
        )
    return problems


def _ignored(fields: Mapping[str, object], protocol: str, instead: str) -> list[str]:
    given = [name for name, value in fields.items() if value is not None]
    if not given:
        return []
    names = ", ".join(given)
    return [f"{names} would be ignored with kafka_security_protocol {protocol}: use {instead}"]


def _system_cas() -> bool:
    """Whether OpenSSL's default CA locations hold anything (create_ssl_context uses them)."""
    paths = ssl.get_default_verify_paths()
    cafile = Path(paths.cafile) if paths.cafile else None
    capath = Path(paths.capath) if paths.capath else None
    return bool(
        (cafile is not None and cafile.is_file())
        or (capath is not None and capath.is_dir() and any(capath.iterdir()))
    )
