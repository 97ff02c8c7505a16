"""Topic management: create the engine's topics before any worker starts.

Brokers that auto-create topics (Tansu does, with four partitions) would
otherwise race the workers and may pick a partition count that differs
between co-partitioned topics, which faust refuses at runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from spinewatch.adapters.kafka_security import KafkaSecurity
from spinewatch.errors import BrokerUnavailable

_TOPIC_ALREADY_EXISTS = 36


async def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    *,
    security: KafkaSecurity | None = None,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Create the topics of `names` that do not exist yet (`security` None: PLAINTEXT),
    each with its `configs` entry as topic settings."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=10_000,
        **(security or KafkaSecurity()).aiokafka_kwargs(),
    )
    try:
        await admin.start()  # inside: a start cut short has opened connections
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=1,
                topic_configs=dict((configs or {}).get(name, {})),
            )
            for name in names
            if name not in existing
        ]
        if not wanted:
            return
        response = await admin.create_topics(wanted)
        # An existing topic is reported as an error code, not raised.
        for topic_error in response.topic_errors:
            name, code = topic_error[0], topic_error[1]
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise BrokerUnavailable(f"creating topic {name} failed with error code {code}")
    finally:
        await admin.close()
