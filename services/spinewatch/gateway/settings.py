"""Typed settings of the HTTP gateway (environment prefix `SPINEWATCH_GATEWAY_`).

Checked at start-up like the other services' (`settings_env.StrictEnvSettings`):
a value against its rule, every `SPINEWATCH_GATEWAY_*` variable by name.
Kafka TLS and SASL are the `kafka_*` fields of `adapters/kafka_security.py`
(`SPINEWATCH_GATEWAY_KAFKA_SECURITY_PROTOCOL`, `..._KAFKA_SASL_MECHANISM`...).

Idempotency retention (`idempotency_retention_s`, default 7 days): hospital
interface engines (Mirth/NextGen Connect, Rhapsody, Cloverleaf) retry a
failed delivery within minutes to hours, and an operator re-sends a stuck
queue within days, so a week covers every retry the gateway should answer
`duplicate`. A re-send after that is produced again, and costs nothing
downstream: the outcomes engine keeps each procedure's state as the set of
its events keyed by `event_id`, so a second copy is a no-op that only
counts in `spinewatch_events_duplicate_total` (README, "Exact under
at-least-once delivery"; `domain/outcomes/records.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from spinewatch.adapters.kafka_security import KafkaSecurity
from spinewatch.contracts.topics import DEFAULT_PARTITIONS, Topology, min_insync_problem
from spinewatch.runtime.settings_env import StrictEnvSettings

DAY_S = 86_400
# The FHIR pseudonyms are HMAC-SHA-256: a key shorter than its 32-byte
# output weakens it, and a short one ("changeme") can be guessed.
MIN_PSEUDONYM_KEY_BYTES = 32


class GatewaySettings(StrictEnvSettings, KafkaSecurity):
    """Every `SPINEWATCH_GATEWAY_*` variable must name a field (see settings_env)."""

    model_config = SettingsConfigDict(env_prefix="SPINEWATCH_GATEWAY_", frozen=True, extra="forbid")

    kafka_brokers: str = Field(pattern=r"^[A-Za-z0-9.\-]+:\d+(,[A-Za-z0-9.\-]+:\d+)*$")
    app_id: str = Field(
        default="spinewatch",
        pattern=r"^[a-z][a-z0-9-]{2,48}$",
        description="The engine's app id: events are written to {app_id}-events.",
    )
    partitions: int = Field(
        default=DEFAULT_PARTITIONS,
        ge=1,
        le=256,
        description="Partition count of the events topic when the gateway creates it first; "
        "checked against the topic at every start (as the worker's SPINEWATCH_PARTITIONS).",
    )
    replication_factor: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Replicas of the events topic when the gateway creates it first.",
    )
    # Declared after replication_factor: its validator reads that value.
    min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="min.insync.replicas of the events topic when the gateway creates it first.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port.")
    credentials_file: Path = Field(
        description="TOML [[token]] tables: id, sha256, source, sites (spinewatch token new)."
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^rediss?://")
    redis_timeout_s: float = Field(default=2.0, gt=0, le=30)
    key_prefix: str = Field(
        default="spinewatch-gateway",
        pattern=r"^[a-z0-9][a-z0-9:-]{0,63}$",
        description="Prefix of every Redis key the gateway writes.",
    )
    idempotency_retention_s: int = Field(
        default=7 * DAY_S,
        ge=3600,
        le=90 * DAY_S,
        description="How long an event_id answers `duplicate` (see the module docstring).",
    )
    max_body_bytes: int = Field(
        default=64 << 10, ge=1024, le=1 << 20, description="Largest single event (413 beyond)."
    )
    max_batch_bytes: int = Field(
        default=4 << 20, ge=1024, le=64 << 20, description="Largest batch body (413 beyond)."
    )
    max_batch_events: int = Field(
        default=500, ge=1, le=10_000, description="Most events in one batch (413 beyond)."
    )
    rate_per_minute: int = Field(
        default=6000,
        ge=1,
        # A moving window keeps one Redis list entry per event in the window.
        le=1_000_000,
        description="Events per source per minute, unless its credential sets its own.",
    )
    produce_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Longest wait for the broker's acknowledgement."
    )
    retry_after_s: int = Field(
        default=5, ge=1, le=3600, description="Retry-After of a 503 (broker or Redis away)."
    )
    readiness_timeout_s: float = Field(
        default=2.0, gt=0, le=30, description="Each /readyz probe (broker, Redis) waits this long."
    )
    wedged_after_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Writes failing this long while the broker answers: /healthz red.",
    )
    give_up_after_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="A liveness check red this long ends the process (exit 70) for a restart.",
    )
    pseudonym_key: SecretStr | None = Field(
        default=None,
        description="HMAC key for FHIR identifiers (>= 32 bytes); unset: no /fhir/r4.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("min_insync_replicas")
    @classmethod
    def _insync_within_replicas(cls, value: int | None, info: ValidationInfo) -> int | None:
        replication = info.data.get("replication_factor")
        problem = None if replication is None else min_insync_problem(value, replication)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("pseudonym_key")
    @classmethod
    def _long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value().encode()) < MIN_PSEUDONYM_KEY_BYTES:
            raise ValueError(f"must be at least {MIN_PSEUDONYM_KEY_BYTES} bytes")
        return key

    @property
    def topics(self) -> Topology:
        return Topology(
            self.app_id, self.partitions, self.replication_factor, self.min_insync_replicas
        )

    @property
    def events_topic(self) -> str:
        return self.topics.events

    @property
    def pending_ms(self) -> int:
        """How long an event_id stays claimed while its write is in flight.

        Longer than the longest write (so a slow ack never frees the key for
        a concurrent retry), short enough that a gateway killed mid-write
        does not block the sender's retry for long.
        """
        return int((2 * self.produce_timeout_s + 5) * 1000)
