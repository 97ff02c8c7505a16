"""Every Kafka topic spinewatch uses: its name, key and partition count, in one place.

Names are `{app_id}-{suffix}`, so two deployments (or two test runs) on one
broker never share a topic. Both services, topic creation and the
benchmarks take names from here, and `schemas/asyncapi.yaml` describes the
same topics for producers and consumers outside Python (a test checks that
the two agree).

All topics of one deployment have the same partition count: facts are keyed
by site and the segments table is co-partitioned with them, and faust
refuses co-partitioned topics whose counts differ. The count is fixed when
the topics are created (`SPINEWATCH_PARTITIONS`, default 4; Tansu also
auto-creates with 4, so a topic created by accident agrees with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DEFAULT_PARTITIONS = 4
# faust names a table's changelog `{app_id}-{table}-changelog`.
SEGMENTS_TABLE = "segments"


class Topic(StrEnum):
    """A topic's suffix; its full name is `{app_id}-{suffix}`."""

    # Inbound clinical events (JSON, schemas/json-schema): hospital systems -> worker.
    EVENTS = "events"
    # Validated facts (msgpack), keyed by site: the worker's ingest -> its apply agent.
    FACTS = "facts"
    # Messages that could not be counted, with the reason in headers.
    DEADLETTER = "deadletter"
    # The worker's state: one segment (a fact batch) per record, keyed by the
    # facts partition and offset it came from, written to that facts partition.
    SEGMENTS_CHANGELOG = f"{SEGMENTS_TABLE}-changelog"
    # Drift signals and sentinels (JSON), keyed by site: worker -> alerting.
    DRIFT = "drift"
    # Every alert transition, for audit: alerting -> anyone.
    ALERTS = "alerts"
    # The cases that drove each signal (pseudonymous ids, dates), keyed by
    # site: worker -> alerting only (contracts/lookback.py).
    LOOKBACK = "lookback"
    # Chart resets decided by closed investigations, keyed by site: alerting
    # -> every worker, read from the start (contracts/control.py).
    CONTROL = "control"


@dataclass(frozen=True)
class Topology:
    """The topics of one deployment (one `app_id`)."""

    app_id: str
    partitions: int = DEFAULT_PARTITIONS

    def name(self, topic: Topic) -> str:
        return f"{self.app_id}-{topic.value}"

    @property
    def events(self) -> str:
        return self.name(Topic.EVENTS)

    @property
    def facts(self) -> str:
        return self.name(Topic.FACTS)

    @property
    def deadletter(self) -> str:
        return self.name(Topic.DEADLETTER)

    @property
    def changelog(self) -> str:
        return self.name(Topic.SEGMENTS_CHANGELOG)

    @property
    def drift(self) -> str:
        return self.name(Topic.DRIFT)

    @property
    def alerts(self) -> str:
        return self.name(Topic.ALERTS)

    @property
    def lookback(self) -> str:
        return self.name(Topic.LOOKBACK)

    @property
    def control(self) -> str:
        return self.name(Topic.CONTROL)

    def configs(self) -> dict[str, dict[str, str]]:
        """Topic settings spinewatch relies on, set when it creates a topic.

        Chart resets are facts every rebuild folds with (contracts/control.py):
        a broker's default retention (7 days on Kafka) would delete them and
        un-reset the charts at the next rebuild, so the control topic keeps
        its records for good.
        """
        return {self.control: {"retention.ms": "-1"}}

    def names(self) -> list[str]:
        """Every topic, to create before any worker starts."""
        return [self.name(topic) for topic in Topic]
