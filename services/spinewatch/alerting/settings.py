"""Typed settings of the alerting service (environment prefix `SPINEWATCH_ALERTING_`).

Besides the Kafka security fields (`adapters/kafka_security.py`,
`SPINEWATCH_ALERTING_KAFKA_SECURITY_PROTOCOL`...), two concern identities:

* `signing_key` (and `signing_previous_keys`): the workers' key, with
  which every drift message must verify before it can page anyone
  (`adapters/message_signing.py`); the service does not start without it.
* who may use the HTTP API (`alerting/identities.py`): `credentials_file`
  (bearer tokens, each mapped to a named on-call user), and/or a trusted
  reverse proxy's user header (`trusted_proxy_header`), believed only from
  `trusted_proxies`. With neither, every API request is refused (401):
  paging goes on, acknowledging waits until an identity source is set.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from spinewatch.adapters.kafka_security import KafkaSecurity
from spinewatch.adapters.message_signing import Keyring, SigningSecret
from spinewatch.contracts.topics import Topology
from spinewatch.runtime.settings_env import StrictEnvSettings


class AlertingSettings(StrictEnvSettings, KafkaSecurity):
    """Every `SPINEWATCH_ALERTING_*` variable must name a field (see settings_env)."""

    model_config = SettingsConfigDict(
        env_prefix="SPINEWATCH_ALERTING_", frozen=True, extra="forbid"
    )

    kafka_brokers: str = Field(pattern=r"^[A-Za-z0-9.\-]+:\d+(,[A-Za-z0-9.\-]+:\d+)*$")
    app_id: str = Field(
        default="spinewatch",
        pattern=r"^[a-z][a-z0-9-]{2,48}$",
        description="The engine's app id: drift topic {app_id}-drift, audit {app_id}-alerts.",
    )
    signing_key: SigningSecret | None = Field(
        default=None,
        description="The workers' SPINEWATCH_SIGNING_KEY: drift messages must verify with it. "
        "Required.",
    )
    signing_previous_keys: tuple[SigningSecret, ...] = Field(
        default=(), max_length=8, description="Keys still accepted during a rotation (JSON list)."
    )
    credentials_file: Path | None = Field(
        default=None,
        description="TOML [[token]] tables: id, sha256, user (spinewatch token new --user).",
    )
    trusted_proxy_header: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="A reverse proxy's authenticated-user header, e.g. X-Forwarded-User.",
    )
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        max_length=64,
        description="Addresses or networks (CIDR) of the proxies whose header is believed.",
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^rediss?://")
    redis_timeout_s: float = Field(default=2.0, gt=0, le=30)
    key_prefix: str = Field(default="spinewatch-alerts", pattern=r"^[a-z0-9][a-z0-9:-]{0,63}$")
    alertmanager_urls: tuple[str, ...] = Field(default=(), description="Alertmanager base URLs.")
    webhook_urls: tuple[str, ...] = Field(default=(), description="JSON webhooks (Slack-style).")
    audit_topic: bool = Field(default=True, description="Every transition on {app_id}-alerts.")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=9465, ge=0, le=65535, description="0 picks a free port.")
    # Alertmanager's own clients re-send active alerts every 30 s to 3 min.
    resend_interval_s: float = Field(default=60.0, ge=0.5, le=180)
    retry_base_s: float = Field(default=1.0, gt=0, le=60)
    retry_max_s: float = Field(default=60.0, gt=0, le=3600)
    lease_s: float = Field(
        default=30.0, gt=0, le=600, description="A claimed delivery is retried after this."
    )
    poll_interval_s: float = Field(default=0.25, gt=0, le=10)
    request_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # The drift dashboard of deploy/grafana (uid spinewatch-drift) on a local Grafana;
    # alerts link to it with ?var-site=...&var-metric=... Set it to your Grafana's.
    dashboard_url: str = (
        "http://localhost:3000/d/spinewatch-drift/spinewatch-drift-charts-and-alerts"
    )
    # -- investigations (alerting/investigations.py, alerting/lookback.py) ---
    lookback_keep_signals: int = Field(
        default=5, ge=1, le=100, description="Look-back lists kept per alert: its newest signals."
    )
    lookback_ttl_days: float = Field(
        default=180.0,
        gt=0,
        le=3650,
        description="An alert's look-back lists expire this long after the last one arrived.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # -- supervision and health (see runtime/supervisor.py and adapters/stream_health.py) ---
    stall_after_s: float = Field(
        default=10.0, gt=0, le=600, description="Drift messages waiting this long: red."
    )
    give_up_after_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="A liveness check red this long ends the process (exit 70) for a restart.",
    )
    probe_interval_s: float = Field(default=1.0, gt=0, le=60)
    broker_timeout_s: float = Field(default=10.0, gt=0, le=600)

    @model_validator(mode="after")
    def _somewhere_to_send(self) -> AlertingSettings:
        if not (self.alertmanager_urls or self.webhook_urls or self.audit_topic):
            raise ValueError("configure at least one receiver (alertmanager, webhook or audit)")
        if self.retry_max_s < self.retry_base_s:
            raise ValueError("retry_max_s must be >= retry_base_s")
        if self.signing_previous_keys and self.signing_key is None:
            raise ValueError("signing_previous_keys needs signing_key")
        if self.signing_key is not None:
            Keyring.from_secrets(self.signing_key, self.signing_previous_keys)  # distinct keys
        if (self.trusted_proxy_header is None) != (not self.trusted_proxies):
            raise ValueError(
                "trusted_proxy_header and trusted_proxies go together: the header is believed "
                "only from the proxies named"
            )
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            try:
                ip_network(value, strict=False)
            except ValueError:
                raise ValueError("each trusted proxy must be an IP address or network") from None
        return values

    @property
    def proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        return tuple(ip_network(value, strict=False) for value in self.trusted_proxies)

    @property
    def deadletter_topic(self) -> str:
        return Topology(self.app_id).deadletter

    @property
    def drift_topic(self) -> str:
        return Topology(self.app_id).drift

    @property
    def alerts_topic(self) -> str:
        return Topology(self.app_id).alerts

    @property
    def lookback_topic(self) -> str:
        return Topology(self.app_id).lookback

    @property
    def control_topic(self) -> str:
        return Topology(self.app_id).control

    @property
    def consumer_group(self) -> str:
        return f"{self.app_id}-alerting"
