"""Topic management: create the engine's topics, and check them at every start.

Brokers that auto-create topics (Tansu does, with four partitions) would
otherwise race the workers and may pick a partition count that differs
between co-partitioned topics, which faust refuses at runtime. A topic
that exists with another partition count than the settings' is refused
too (`TopicMismatch`): the producers place a key by murmur2(key) modulo
the count, so a site's facts would land in another partition than its
state and drift charts, and Kafka can only add partitions, which moves
keys just the same.

`ensure_topics` is what the worker and the gateway run at start-up and
what `spinewatch topics create|check` runs before any service starts. The
partition counts are read with a Metadata request of every topic
(`describe_topics()` without names): naming a topic that does not exist
would make Tansu auto-create it, with four partitions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code

from spinewatch.adapters.kafka_security import KafkaSecurity
from spinewatch.errors import BrokerUnavailable, TopicMismatch

_TOPIC_ALREADY_EXISTS = 36
# Kafka answers CreateTopics before every broker's metadata shows the new
# topic; its partitions are read again until they do, for at most this long.
_VISIBLE_WITHIN_S = 10.0


@dataclass(frozen=True)
class TopicLayout:
    """A topic as the broker describes it."""

    name: str
    partitions: int
    replicas: int  # of its least replicated partition


@dataclass(frozen=True)
class TopicsReport:
    """What `ensure_topics` did and found."""

    created: tuple[str, ...]
    # Every topic asked for, as the broker describes it after creation.
    layouts: dict[str, TopicLayout] = field(default_factory=dict)


def new_topics(
    names: Iterable[str],
    existing: Iterable[str],
    partitions: int,
    replication_factor: int,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[NewTopic]:
    """The CreateTopics entries for the `names` not in `existing`, with their configs."""
    present = set(existing)
    return [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            topic_configs=dict((configs or {}).get(name, {})),
        )
        for name in names
        if name not in present
    ]


def partition_problems(
    names: Iterable[str],
    layouts: Mapping[str, TopicLayout],
    partitions: int,
    setting: str = "SPINEWATCH_PARTITIONS",
) -> list[str]:
    """One sentence per topic of `names` that is missing or has another partition count."""
    problems = []
    for name in names:
        layout = layouts.get(name)
        if layout is None:
            problems.append(
                f"topic {name} does not exist: create the deployment's topics first "
                "(`spinewatch topics create`, with the worker's settings)"
            )
        elif layout.partitions != partitions:
            problems.append(
                f"topic {name} has {layout.partitions} partitions, the settings say "
                f"{partitions} ({setting}): a key's partition depends on the count, so "
                f"co-partitioned topics must all have it. Set {setting}={layout.partitions} "
                "to use the topics as they are, or move to topics created with the new "
                "count (a new SPINEWATCH_APP_ID, or delete and recreate them: their "
                "records are lost)"
            )
    return problems


async def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    *,
    security: KafkaSecurity | None = None,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    replication_factor: int = 1,
    create: bool = True,
    partitions_setting: str = "SPINEWATCH_PARTITIONS",
    wait_s: float = 0.0,
) -> TopicsReport:
    """Create the topics of `names` that do not exist yet (`create`), each with
    `partitions`, `replication_factor` and its `configs` entry, then check that
    every one of them exists with `partitions` partitions (`TopicMismatch` if
    not, naming `partitions_setting`). `security` None: PLAINTEXT. `wait_s`:
    how long to keep retrying a broker that does not answer yet."""
    wanted_names = list(names)
    admin = await _started_admin(bootstrap, security, wait_s)
    try:
        layouts = await _layouts(admin)
        created: list[str] = []
        if create:
            wanted = new_topics(wanted_names, layouts, partitions, replication_factor, configs)
            if wanted:
                created = await _create(admin, wanted)
                layouts = await _visible(admin, created)
        problems = partition_problems(wanted_names, layouts, partitions, partitions_setting)
        if problems:
            raise TopicMismatch(problems)
        return TopicsReport(tuple(created), {name: layouts[name] for name in wanted_names})
    finally:
        await admin.close()


async def config_drift(
    bootstrap: str,
    configs: Mapping[str, Mapping[str, str]],
    *,
    security: KafkaSecurity | None = None,
) -> list[str]:
    """One sentence per topic setting of `configs` the broker holds otherwise.

    Topics created before a setting was added to `Topology.configs`, or by
    a broker's auto-creation, lack it; `ensure_topics` never alters an
    existing topic, so this says which `kafka-configs --alter` is due.
    """
    admin = await _started_admin(bootstrap, security, 0.0)
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in configs]
        responses = await admin.describe_configs(resources) if resources else []
    finally:
        await admin.close()
    held: dict[str, dict[str, str]] = {}
    for response in responses:
        for _code, _message, _type, name, entries in response.resources:
            held[name] = {entry[0]: entry[1] for entry in entries}
    drift = []
    for name, wanted in configs.items():
        for key, value in wanted.items():
            actual = held.get(name, {}).get(key)
            if actual != value:
                has = f"{key}={actual}" if actual is not None else f"no {key}"
                drift.append(
                    f"topic {name} has {has}, spinewatch creates it with {key}={value} "
                    f"(kafka-configs.sh --alter --entity-type topics --entity-name {name} "
                    f"--add-config {key}={value})"
                )
    return drift


async def _started_admin(
    bootstrap: str, security: KafkaSecurity | None, wait_s: float
) -> AIOKafkaAdminClient:
    """An admin client that reached the broker; retried with backoff for `wait_s`."""
    deadline = time.monotonic() + wait_s
    attempt = 0
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=10_000,
            **(security or KafkaSecurity()).aiokafka_kwargs(),
        )
        try:
            await admin.start()  # inside: a start cut short has opened connections
        except (KafkaError, OSError) as exc:
            await admin.close()
            left = deadline - time.monotonic()
            if left > 0:
                attempt += 1
                await asyncio.sleep(min(left, 0.25 * 2 ** min(attempt, 5)))  # 0.5 s .. 8 s
                continue
            if wait_s > 0:
                raise BrokerUnavailable(
                    f"no Kafka broker answered at {bootstrap} within {wait_s:g} s "
                    f"({type(exc).__name__})"
                ) from exc
            raise
        except BaseException:
            await admin.close()
            raise
        else:
            return admin


async def _layouts(admin: AIOKafkaAdminClient) -> dict[str, TopicLayout]:
    """Every topic the broker describes without an error, with its partition count."""
    found = {}
    for topic in await admin.describe_topics():  # no names: nothing auto-created
        layout = _layout(topic)
        if layout is not None:
            found[layout.name] = layout
    return found


def _layout(topic: Mapping[str, Any]) -> TopicLayout | None:
    partitions = topic["partitions"]
    if topic["error_code"] != 0 or not partitions:
        return None
    replicas = min(len(partition["replicas"]) for partition in partitions)
    return TopicLayout(topic["topic"], len(partitions), replicas)


async def _create(admin: AIOKafkaAdminClient, wanted: list[NewTopic]) -> list[str]:
    """Create `wanted`; the names it created (another creator may have been first).

    A refusal (too few brokers for the replication factor, a policy, ACLs)
    is a `TopicMismatch` too: the topics cannot be as the settings say.
    """
    response = await admin.create_topics(wanted)
    created, refused = [], []
    # An existing topic is reported as an error code, not raised.
    for topic_error in response.topic_errors:
        name, code = topic_error[0], topic_error[1]
        reason = topic_error[2] if len(topic_error) > 2 else None  # v1+: the broker's words
        if code == 0:
            created.append(name)
        elif code != _TOPIC_ALREADY_EXISTS:
            refused.append(
                f"the broker refused to create topic {name}: {for_code(code).__name__} "
                f"({code}{': ' + reason if reason else ''}); check SPINEWATCH_REPLICATION_FACTOR "
                "and SPINEWATCH_MIN_INSYNC_REPLICAS against the cluster, and the ACLs"
            )
    if refused:
        raise TopicMismatch(refused)
    return created


async def _visible(admin: AIOKafkaAdminClient, created: list[str]) -> dict[str, TopicLayout]:
    """Every topic's layout once the `created` ones show in the metadata (bounded)."""
    deadline = time.monotonic() + _VISIBLE_WITHIN_S
    while True:
        layouts = await _layouts(admin)
        if all(name in layouts for name in created) or time.monotonic() > deadline:
            return layouts
        await asyncio.sleep(0.2)
