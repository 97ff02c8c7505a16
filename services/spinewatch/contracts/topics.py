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
auto-creates with 4, so a topic created by accident agrees with it), and
every service that creates topics checks it again at start-up
(`adapters/kafka_admin.py`): a key's partition is murmur2(key) modulo the
count, so a different count sends a site's facts to another partition than
its state.

Replication (`SPINEWATCH_REPLICATION_FACTOR`, default 1 for the embedded
broker and a single dev broker; 3 in production) and
`SPINEWATCH_MIN_INSYNC_REPLICAS` (unset: the broker's default) are set when
a topic is created; producers write with acks=all, so a write is
acknowledged once that many replicas hold it.
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


def min_insync_problem(min_insync_replicas: int | None, replication_factor: int) -> str | None:
    """Why `min.insync.replicas` cannot work with the replication factor, or None.

    More in-sync replicas required than there are replicas refuses every
    acks=all write (NOT_ENOUGH_REPLICAS), on every topic, from the first one.
    """
    if min_insync_replicas is not None and min_insync_replicas > replication_factor:
        return (
            f"must not exceed replication_factor ({replication_factor}): every acks=all "
            "write would be refused with NOT_ENOUGH_REPLICAS"
        )
    return None


@dataclass(frozen=True)
class Topology:
    """The topics of one deployment (one `app_id`)."""

    app_id: str
    partitions: int = DEFAULT_PARTITIONS
    replication_factor: int = 1
    # None: not set on the topics, so the broker's default applies.
    min_insync_replicas: int | None = None

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

        The segments changelog is the worker's whole state, rebuilt from it
        at every rebalance: under the broker's default policy (delete after
        7 days on Kafka) a restart would lose every segment older than that.
        Compaction never deletes a key's latest record, and segment keys are
        the facts partition and offset, so it keeps every segment and only
        drops the older copy a redelivered batch wrote under the same key.
        """
        configs: dict[str, dict[str, str]] = {
            self.changelog: {"cleanup.policy": "compact"},
            self.control: {"retention.ms": "-1"},
        }
        if self.min_insync_replicas is not None:
            for name in self.names():
                configs.setdefault(name, {})["min.insync.replicas"] = str(self.min_insync_replicas)
        return configs

    def names(self) -> list[str]:
        """Every topic, to create before any worker starts."""
        return [self.name(topic) for topic in Topic]
