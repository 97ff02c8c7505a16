"""Typed settings of the alerting service (environment prefix `SPINEWATCH_ALERTING_`)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from spinewatch.contracts.topics import Topology
from spinewatch.runtime.settings_env import StrictEnvSettings


class AlertingSettings(StrictEnvSettings):
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
    dashboard_url: str = "http://grafana.example.invalid/d/spinewatch/outcomes"
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
        return self

    @property
    def drift_topic(self) -> str:
        return Topology(self.app_id).drift

    @property
    def alerts_topic(self) -> str:
        return Topology(self.app_id).alerts

    @property
    def consumer_group(self) -> str:
        return f"{self.app_id}-alerting"
