"""`spinewatch topics create|check` and the start-up check of partition counts, on Tansu.

The commands run as real processes with only the variables a test sets
(as a compose init service or a Kubernetes Job runs them); topics are read
back from the broker (Metadata, DescribeConfigs). Tansu is one broker, yet
it accepts replication factor 3 and records three replicas per partition
without replicating anything: the tests show that the setting reaches the
CreateTopics request, not that Kafka replicates.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from spinewatch.contracts.topics import Topology
from spinewatch.devservers.tansu import EmbeddedBroker, free_port
from spinewatch.errors import TopicMismatch
from spinewatch.gateway.producer import EventProducer
from spinewatch.gateway.settings import GatewaySettings
from spinewatch.runtime.supervisor import Heartbeat
from tests.support import TEST_SIGNING_KEY, scaled

DEADLINE_S = 60.0  # a run takes ~2 s; generous for a loaded 2-core machine

pytestmark = pytest.mark.e2e


def run(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SPINEWATCH_")}
    env |= {"SPINEWATCH_METRICS_PORT": str(free_port()), **variables}
    return subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "spinewatch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(DEADLINE_S),
        check=False,
    )


@pytest.fixture
def app_id() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


async def admin_of(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    return admin


async def precreate(bootstrap: str, name: str, partitions: int) -> None:
    admin = await admin_of(bootstrap)
    try:
        response = await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    assert response.topic_errors[0][1] == 0, response


async def described(bootstrap: str) -> dict[str, tuple[int, int]]:
    """Every topic: (partitions, replicas of its first partition)."""
    admin = await admin_of(bootstrap)
    try:
        topics = await admin.describe_topics()
    finally:
        await admin.close()
    return {t["topic"]: (len(t["partitions"]), len(t["partitions"][0]["replicas"])) for t in topics}


async def topic_configs(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = await admin_of(bootstrap)
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    return {
        name: {entry[0]: entry[1] for entry in entries}
        for response in responses
        for _, _, _, name, entries in response.resources
    }


async def test_create_twice_creates_once_with_the_production_settings(
    kafka_bootstrap: str, app_id: str
) -> None:
    production = {
        "SPINEWATCH_KAFKA_BROKERS": kafka_bootstrap,
        "SPINEWATCH_APP_ID": app_id,
        "SPINEWATCH_PARTITIONS": "6",
        "SPINEWATCH_REPLICATION_FACTOR": "3",
        "SPINEWATCH_MIN_INSYNC_REPLICAS": "2",
    }
    topology = Topology(app_id)
    first = run("topics", "create", **production)
    assert first.returncode == 0, first.stderr
    for name in topology.names():
        assert f"{name}: created, 6 partitions, 3 replicas" in first.stdout
    second = run("topics", "create", **production)
    assert second.returncode == 0, second.stderr
    assert "created," not in second.stdout
    assert "8 topics as the settings say, 0 created" in second.stdout
    assert "warning" not in second.stderr  # configs read back as created

    layouts = await described(kafka_bootstrap)
    assert {name: layouts[name] for name in topology.names()} == dict.fromkeys(
        topology.names(), (6, 3)
    )
    configs = await topic_configs(kafka_bootstrap, topology.names())
    assert configs[topology.changelog]["cleanup.policy"] == "compact"
    assert configs[topology.control]["retention.ms"] == "-1"
    for name in topology.names():
        assert configs[name]["min.insync.replicas"] == "2", name
        if name != topology.changelog:
            assert configs[name].get("cleanup.policy") != "compact", name  # not everywhere


async def test_a_topic_with_another_partition_count_fails_create_and_check(
    kafka_bootstrap: str, app_id: str
) -> None:
    topology = Topology(app_id)
    await precreate(kafka_bootstrap, topology.facts, 2)
    settings = {"SPINEWATCH_KAFKA_BROKERS": kafka_bootstrap, "SPINEWATCH_APP_ID": app_id}
    expected = (
        f"topic {topology.facts} has 2 partitions, the settings say 4 (SPINEWATCH_PARTITIONS)"
    )
    create = run("topics", "create", **settings)
    check = run("topics", "check", **settings)
    for done in (create, check):
        assert done.returncode == 1, done.stderr
        assert expected in done.stderr
        assert "SPINEWATCH_PARTITIONS=2" in done.stderr  # what to do
        assert "Traceback" not in done.stderr
        # Only the facts topic is named: create made the others with 4.
        assert done.stderr.count("has 2 partitions") == 1
        assert "does not exist" not in done.stderr


async def test_an_existing_changelog_without_compaction_is_warned_about_not_altered(
    kafka_bootstrap: str, app_id: str
) -> None:
    topology = Topology(app_id)
    await precreate(kafka_bootstrap, topology.changelog, 4)  # no configs: the broker's default
    done = run(
        "topics", "create", SPINEWATCH_KAFKA_BROKERS=kafka_bootstrap, SPINEWATCH_APP_ID=app_id
    )
    assert done.returncode == 0, done.stderr  # the partitions agree
    assert f"{topology.changelog}: exists, 4 partitions" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, done.stderr
    assert f"topic {topology.changelog} has " in warnings[0]
    assert "spinewatch creates it with cleanup.policy=compact" in warnings[0]
    assert "--add-config cleanup.policy=compact" in warnings[0]
    configs = await topic_configs(kafka_bootstrap, [topology.changelog])
    assert configs[topology.changelog].get("cleanup.policy") != "compact"  # not altered


async def test_check_creates_nothing_and_names_every_missing_topic(
    kafka_bootstrap: str, app_id: str
) -> None:
    topology = Topology(app_id)
    done = run(
        "topics", "check", SPINEWATCH_KAFKA_BROKERS=kafka_bootstrap, SPINEWATCH_APP_ID=app_id
    )
    assert done.returncode == 1, done.stderr
    for name in topology.names():
        assert f"topic {name} does not exist" in done.stderr
    # Not auto-created by the check's metadata request either.
    assert not set(topology.names()) & set(await described(kafka_bootstrap))


def test_an_absent_broker_is_waited_for_then_reported() -> None:
    began = time.monotonic()
    done = run(
        "topics", "check", "--wait-s", "2", SPINEWATCH_KAFKA_BROKERS=f"127.0.0.1:{free_port()}"
    )
    assert done.returncode == 3, done.stderr
    assert "no Kafka broker answered at 127.0.0.1:" in done.stderr
    assert "within 2 s" in done.stderr
    assert time.monotonic() - began >= 2  # it did wait
    assert "Traceback" not in done.stderr


async def test_a_broker_that_comes_up_later_is_waited_for(app_id: str) -> None:
    """The init container may start before Kafka: it retries, then creates."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SPINEWATCH_")}
    env |= {"SPINEWATCH_KAFKA_BROKERS": f"127.0.0.1:{port}", "SPINEWATCH_APP_ID": app_id}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spinewatch", "topics", "create", "--wait-s", str(scaled(60)),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        # The broker starts only once a connection attempt has failed.
        async with asyncio.timeout(scaled(30)):
            while b"Unable connect" not in await process.stderr.readline():
                pass
        async with EmbeddedBroker(port=port):
            out, err = await asyncio.wait_for(process.communicate(), scaled(DEADLINE_S))
            layouts = await described(f"127.0.0.1:{port}")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert "8 topics as the settings say, 8 created" in out.decode()
    assert all(layouts[name] == (4, 1) for name in Topology(app_id).names())


def test_min_insync_above_the_replication_factor_is_a_field_error() -> None:
    done = run(
        "topics",
        "create",
        SPINEWATCH_KAFKA_BROKERS="127.0.0.1:9",
        SPINEWATCH_REPLICATION_FACTOR="2",
        SPINEWATCH_MIN_INSYNC_REPLICAS="3",
    )
    assert done.returncode == 2, done.stderr
    assert "SPINEWATCH_MIN_INSYNC_REPLICAS (min_insync_replicas)" in done.stderr
    assert "must not exceed replication_factor (2)" in done.stderr


async def test_a_worker_refuses_topics_with_another_partition_count(
    kafka_bootstrap: str, app_id: str, tmp_path: Path
) -> None:
    topology = Topology(app_id)
    await precreate(kafka_bootstrap, topology.changelog, 3)
    done = run(
        "worker",
        SPINEWATCH_KAFKA_BROKERS=kafka_bootstrap,
        SPINEWATCH_APP_ID=app_id,
        SPINEWATCH_SIGNING_KEY=TEST_SIGNING_KEY,
        SPINEWATCH_DATA_DIR=str(tmp_path),
        SPINEWATCH_INGEST_PROCESSES="0",
    )
    assert done.returncode == 2, done.stderr
    assert (
        f"spinewatch worker: topic {topology.changelog} has 3 partitions, the settings say 4 "
        "(SPINEWATCH_PARTITIONS)"
    ) in done.stderr
    assert done.stdout == ""  # the start-up line never came: it did not join its group
    assert "Traceback" not in done.stderr


async def test_the_gateway_refuses_an_events_topic_with_another_partition_count(
    kafka_bootstrap: str, app_id: str, tmp_path: Path
) -> None:
    topology = Topology(app_id)
    await precreate(kafka_bootstrap, topology.events, 2)
    settings = GatewaySettings(
        kafka_brokers=kafka_bootstrap,
        app_id=app_id,
        credentials_file=tmp_path / "tokens.toml",
    )
    producer = EventProducer(settings)
    try:
        # Raised out of its loop (the supervisor logs it, /healthz turns red),
        # not retried quietly as a broker that is away would be.
        with pytest.raises(TopicMismatch) as raised:
            await asyncio.wait_for(producer.run(Heartbeat(time.monotonic)), scaled(30))
    finally:
        await producer.close()
    assert (
        f"topic {topology.events} has 2 partitions, the settings say 4 "
        "(SPINEWATCH_GATEWAY_PARTITIONS)"
    ) in str(raised.value)
