"""Typed settings of the outcomes engine (environment prefix `SPINEWATCH_`).

Every knob is validated at start-up, so a typo in a deployment fails fast
with the field named, instead of surfacing as odd behaviour mid-stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPINEWATCH_", frozen=True, extra="forbid")

    kafka_brokers: str | None = Field(
        default=None,
        description="host:port[,host:port]; unset means start the embedded Tansu broker.",
        pattern=r"^[A-Za-z0-9.\-]+:\d+(,[A-Za-z0-9.\-]+:\d+)*$",
    )
    app_id: str = Field(
        default="spinewatch",
        pattern=r"^[a-z][a-z0-9-]{2,48}$",
        description="Consumer group id, and the prefix of every topic name.",
    )
    partitions: int = Field(default=4, ge=1, le=256)
    store: Literal["memory://", "rocksdb://"] = "memory://"
    data_dir: Path = Field(default=Path(".spinewatch-data"), description="RocksDB/faust data.")
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
        default=10_000, ge=700, description="Allocations between young-generation GC runs."
    )
    stop_timeout_s: float = Field(default=15.0, gt=0, le=300.0)
    # Work-arounds for the Tansu broker (see adapters/compat.py); harmless
    # but slower on Apache Kafka, where they should be switched off.
    tansu_compat: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "warning"

    @property
    def events_topic(self) -> str:
        return f"{self.app_id}-events"

    @property
    def facts_topic(self) -> str:
        return f"{self.app_id}-facts"

    @property
    def deadletter_topic(self) -> str:
        return f"{self.app_id}-deadletter"

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-{SEGMENTS_TABLE}-changelog"


SEGMENTS_TABLE = "segments"
