"""Typed settings of the outcomes engine (environment prefix `SPINEWATCH_`).

Every knob is validated at start-up, so a typo in a deployment fails fast
with the field named, instead of surfacing as odd behaviour mid-stream: a
bad value by its rule, an unknown `SPINEWATCH_*` variable by its name and
the closest valid one (`settings_env.StrictEnvSettings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict

from spinewatch.adapters.kafka_security import KafkaSecurity
from spinewatch.adapters.message_signing import Keyring, SigningSecret
from spinewatch.baselines import seeds
from spinewatch.contracts.base import SiteId
from spinewatch.contracts.topics import DEFAULT_PARTITIONS, Topology, min_insync_problem
from spinewatch.domain.drift.silence import SilenceRule
from spinewatch.engine.ingest import IngestLimits
from spinewatch.runtime.failures import InputLimits
from spinewatch.runtime.settings_env import StrictEnvSettings

# Charted by default: leakage per treated level, symptomatic leakage, any
# complication, and each named complication whose literature figure is not
# zero somewhere (zero-figure events page as sentinels instead).
# Per level, PVP leakage has a point estimate only for hemangioma (seed 000,
# 3/28); for metastases and myeloma the seeds give one per patient (seed 003:
# "9,2 % of the VP group"), so both leakage charts run.
DEFAULT_DRIFT_METRICS = (
    "cement_leakage_rate_per_level",
    "cement_leakage_rate_per_patient",
    "symptomatic_cement_leakage_rate",
    "complication_rate",
    "radiculopathy_rate",
    "reoperation_rate",
    "neurological_deficit_rate",
)


class SiteBudgetOverride(BaseModel):
    """One site's alarm budget in settings (domain/drift/site_design.py uses it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arl0_months: float | None = Field(
        default=None, ge=1.0, le=1200.0, description="Months between false alarms, per chart."
    )
    volume_per_month: float | None = Field(
        default=None,
        gt=0,
        le=100_000,
        description="Procedures a month, instead of the volume measured from the site's cases.",
    )


class Settings(StrictEnvSettings, KafkaSecurity):
    """The worker's settings; the `kafka_*` security fields come from `KafkaSecurity`."""

    model_config = SettingsConfigDict(env_prefix="SPINEWATCH_", frozen=True, extra="forbid")
    # Under SPINEWATCH_ but not the worker's: the alerting service's, the
    # gateway's and the replay's own namespaces (each checks its own), the
    # test suite's knobs, and the seed directory the catalog verifier reads.
    # One shell may well hold them all.
    foreign_env_prefixes: ClassVar[tuple[str, ...]] = (
        "SPINEWATCH_ALERTING_",
        "SPINEWATCH_GATEWAY_",
        "SPINEWATCH_REPLAY_",
        "SPINEWATCH_TEST_",
    )
    # SPINEWATCH_ROLE: the container image's HEALTHCHECK reads it to pick the
    # service to probe (`spinewatch $SPINEWATCH_ROLE --check`, Dockerfile); the
    # image sets it for every service, the worker included.
    foreign_env_vars: ClassVar[tuple[str, ...]] = (seeds.ENV_VAR, "SPINEWATCH_ROLE")

    kafka_brokers: str | None = Field(
        default=None,
        description="host:port[,host:port] of the Kafka cluster; required unless embedded_broker.",
        pattern=r"^[A-Za-z0-9.\-]+:\d+(,[A-Za-z0-9.\-]+:\d+)*$",
    )
    embedded_broker: bool = Field(
        default=False,
        description="Start a throwaway in-memory Tansu broker instead (demo, trials): "
        "its data is lost when the process stops. Excludes kafka_brokers.",
    )
    app_id: str = Field(
        default="spinewatch",
        pattern=r"^[a-z][a-z0-9-]{2,48}$",
        description="Consumer group id, and the prefix of every topic name.",
    )
    # -- signatures on the internal topics (see adapters/message_signing.py) ----------------
    signing_key: SigningSecret | None = Field(
        default=None,
        description="Signs fact batches and drift messages (>= 32 bytes; the alerting "
        "service needs it too). Required with kafka_brokers; the embedded broker generates one.",
    )
    signing_previous_keys: tuple[SigningSecret, ...] = Field(
        default=(),
        max_length=8,
        description="Keys still accepted, never used to sign: a rotation's old key (JSON list).",
    )
    partitions: int = Field(
        default=DEFAULT_PARTITIONS,
        ge=1,
        le=256,
        description="Partitions of every topic: set at creation, checked at every start.",
    )
    replication_factor: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Replicas of every topic this creates: 1 for one broker, 3 in production.",
    )
    # Declared after replication_factor: its validator reads that value.
    min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="min.insync.replicas of every topic this creates (2 with 3 replicas); "
        "unset: the broker's default.",
    )
    store: Literal["memory://", "rocksdb://"] = "memory://"
    data_dir: Path = Field(default=Path(".spinewatch-data"), description="RocksDB/faust data.")
    snapshot_every_s: float = Field(
        default=300.0,
        ge=1.0,
        description="With the RocksDB store: seconds between snapshots of the outcome state "
        "in data_dir (also written at a clean stop), so a restart applies only the segments "
        "after them.",
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535, description="0 picks a free port.")
    web_port: int = Field(
        default=6066, ge=1, le=65535, description="faust binds it even when its web is off."
    )
    session_timeout_s: float = Field(default=10.0, ge=1.0, le=300.0)
    ingest_processes: int = Field(
        default=2,
        ge=0,
        le=16,
        description="Child processes that validate inbound batches; 0 validates inline.",
    )
    ingest_chunk_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        description="Inbound bytes triaged per unit of work: bounds fact batches and latency.",
    )
    ingest_batch_max: int = Field(default=2000, ge=1, le=100_000)
    ingest_batch_within_s: float = Field(default=0.05, gt=0, le=5.0)
    commit_every: int = Field(default=500, ge=1)
    gc_young_threshold: int = Field(
        default=10_000,
        ge=700,
        description="Allocations between young-generation GC runs in the worker process.",
    )
    stop_timeout_s: float = Field(default=15.0, gt=0, le=300.0)
    # Work-arounds for the Tansu broker (see patches/tansu.py). They patch
    # aiokafka's group leave and fetch wait and cap producer batches at one
    # record: needless, and slower, on Apache Kafka. Resolved in one place,
    # bootstrap.tansu_compat().
    tansu_compat: bool | None = Field(
        default=None,
        description="Tansu work-arounds; unset means on exactly when embedded_broker is.",
    )

    # -- failing input (see runtime/failures.py and runtime/dead_letters.py) ----------------
    max_message_bytes: int = Field(
        default=8 << 20,
        ge=1024,
        le=64 << 20,
        description="Larger inbound messages are dead-lettered undecoded (message_too_large).",
    )
    max_nesting_depth: int = Field(
        default=32, ge=8, le=128, description="Deeper JSON is dead-lettered (nesting_too_deep)."
    )
    deadletter_max_bytes: int = Field(
        default=512 << 10,
        ge=1024,
        le=900_000,
        description="A dead letter keeps at most this much of its payload (the rest is hashed).",
    )

    # -- supervision and health (see runtime/supervisor.py and adapters/stream_health.py) ---
    stall_after_s: float = Field(
        default=5.0, gt=0, le=600, description="Input waiting this long unprocessed: red."
    )
    give_up_after_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="A liveness check red this long ends the process (exit 70) for a restart.",
    )
    probe_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="How often lag is read from the broker."
    )
    broker_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="No answer from the broker this long: red."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "warning"

    # -- drift charts (see domain/drift/design.py) --------------------------
    drift_metrics: tuple[str, ...] = Field(
        default=DEFAULT_DRIFT_METRICS,
        description="Rate metrics charted per site; () turns drift monitoring off.",
    )
    drift_odds_ratios: tuple[float, ...] = Field(
        default=(2.0,),
        min_length=1,
        description="Shifts the charts detect: > 1 deterioration, < 1 improvement.",
    )
    drift_vas_timepoints: tuple[str, ...] = Field(
        default=("post_procedure", "final"),
        description="Follow-up timepoints whose paired VAS change is charted; () for none.",
    )
    drift_vas_shift_sd: float = Field(
        default=1.0,
        ge=0.1,
        le=5.0,
        description="Loss of pain relief the VAS charts detect, in SD of the published change.",
    )
    drift_arl0_months: float = Field(
        default=60.0,
        ge=1.0,
        le=1200.0,
        description="False-alarm budget per chart: expected months between false alarms "
        "at the site's own volume (domain/drift/budget.py says why 60).",
    )
    drift_site_budgets: dict[SiteId, SiteBudgetOverride] = Field(
        default_factory=dict,
        description='Per-site overrides, JSON: {"site": {"arl0_months": 36, '
        '"volume_per_month": 12}}; volume in procedures a month replaces the measured one.',
    )
    drift_resolve_after_cases: int = Field(
        default=100,
        ge=1,
        description="Cases without a new signal after which a chart is back in control.",
    )
    drift_interval_s: float = Field(
        default=1.0, gt=0, le=300, description="How often charts are refolded and published."
    )
    metrics_render_interval_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="How often the cohort, drift and follow-up metrics /metrics serves are "
        "rendered (at least; slower when a rendering is slow: engine/metric_renderer.py).",
    )

    # -- stream silence (see domain/drift/silence.py, which says why these defaults) --------
    silence_watch: bool = Field(
        default=True, description="Warn when a site's events stop; false turns it off."
    )
    silence_multiple: float = Field(
        default=8.0,
        ge=2.0,
        le=1000.0,
        description="Silent after this many usual gaps without an event (and the floor).",
    )
    silence_min_s: float = Field(
        default=96 * 3600.0,
        ge=0.0,
        le=90 * 86_400.0,
        description="Floor of the silence threshold in seconds: covers weekends and holidays.",
    )
    silence_min_arrivals: int = Field(
        default=10, ge=2, le=1000, description="Arrivals held before a site's silence is judged."
    )
    silence_window_s: float = Field(
        default=28 * 86_400.0,
        gt=0.0,
        le=365 * 86_400.0,
        description="Trailing window of arrivals the usual gap is estimated from, in seconds.",
    )
    # -- follow-up completeness (see domain/followup/) -------------------------
    followup_schedule: tuple[str, ...] = Field(
        default=("post_procedure", "week_1"),
        description="Timepoints each site is expected to collect (windows in the README); "
        "() tracks no completeness. Default: what the demo's sites send.",
    )
    followup_expected_completeness: float = Field(
        default=0.80,
        ge=0.5,
        le=0.99,
        description="Local target the completeness chart tests against (the seeds give none; "
        "registries report 25-30% non-response at one year).",
    )
    followup_missing_odds_ratio: float = Field(
        default=2.0,
        gt=1.0,
        le=20.0,
        description="Odds of a missing follow-up the completeness chart detects.",
    )

    @model_validator(mode="after")
    def _one_broker_choice(self) -> Settings:
        if self.embedded_broker and self.kafka_brokers is not None:
            raise ValueError("set either kafka_brokers or embedded_broker, not both")
        if self.signing_previous_keys and self.signing_key is None:
            raise ValueError("signing_previous_keys needs signing_key (the key that signs)")
        if self.signing_key is not None:
            Keyring.from_secrets(self.signing_key, self.signing_previous_keys)  # distinct keys
        return self

    @field_validator("min_insync_replicas")
    @classmethod
    def _insync_within_replicas(cls, value: int | None, info: ValidationInfo) -> int | None:
        replication = info.data.get("replication_factor")
        problem = None if replication is None else min_insync_problem(value, replication)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("drift_metrics")
    @classmethod
    def _known_metrics(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        from spinewatch.domain.drift.design import monitorable_metrics  # noqa: PLC0415

        known = monitorable_metrics()
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"not chartable: {unknown}; choose from {sorted(known)}")
        if len(set(names)) != len(names):
            raise ValueError("each metric once")
        return names

    @field_validator("drift_vas_timepoints")
    @classmethod
    def _timepoints(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        from spinewatch.contracts.vocabulary import FollowupTimepoint  # noqa: PLC0415

        known = {t.value for t in FollowupTimepoint}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"unknown timepoints {unknown}; choose from {sorted(known)}")
        if len(set(names)) != len(names):
            raise ValueError("each timepoint once")
        return names

    @field_validator("followup_schedule")
    @classmethod
    def _schedulable(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        from spinewatch.domain.followup.schedule import schedule_windows  # noqa: PLC0415

        schedule_windows(names)  # a timepoint without a fixed window is refused, named
        if len(set(names)) != len(names):
            raise ValueError("each timepoint once")
        return names

    @field_validator("drift_odds_ratios")
    @classmethod
    def _shifts(cls, ratios: tuple[float, ...]) -> tuple[float, ...]:
        for ratio in ratios:
            if not 0.05 <= ratio <= 20 or ratio == 1:
                raise ValueError(f"odds ratio {ratio} must lie in [0.05, 20] and not be 1")
        if len(set(ratios)) != len(ratios):
            raise ValueError("each odds ratio once")
        return ratios

    @property
    def silence_rule(self) -> SilenceRule | None:
        if not self.silence_watch:
            return None
        return SilenceRule(
            self.silence_multiple,
            self.silence_min_s,
            self.silence_min_arrivals,
            self.silence_window_s,
        )

    @property
    def ingest_limits(self) -> IngestLimits:
        return IngestLimits(
            InputLimits(self.max_message_bytes, self.max_nesting_depth), self.deadletter_max_bytes
        )

    @property
    def topics(self) -> Topology:
        return Topology(
            self.app_id, self.partitions, self.replication_factor, self.min_insync_replicas
        )

    @property
    def drift_topic(self) -> str:
        return self.topics.drift

    @property
    def events_topic(self) -> str:
        return self.topics.events

    @property
    def facts_topic(self) -> str:
        return self.topics.facts

    @property
    def deadletter_topic(self) -> str:
        return self.topics.deadletter

    @property
    def changelog_topic(self) -> str:
        return self.topics.changelog
