"""`spinewatch topics create|check`: the deployment's topics, before any service starts.

    spinewatch topics create [--wait-s S]   create the missing topics, then check all
    spinewatch topics check  [--wait-s S]   check only; creates nothing

Settings are the worker's (`SPINEWATCH_*`): `SPINEWATCH_KAFKA_BROKERS`,
`SPINEWATCH_APP_ID` (the topic names, `contracts/topics.py`),
`SPINEWATCH_PARTITIONS`, `SPINEWATCH_REPLICATION_FACTOR`,
`SPINEWATCH_MIN_INSYNC_REPLICAS` and the `SPINEWATCH_KAFKA_*` security
settings; a compose init service or a Kubernetes Job runs it with the same
environment as the workers. `create` makes every missing topic with the
configured partitions, replication factor and topic settings (the segments
changelog compacted, the control topic kept for good, `min.insync.replicas`
on all when set) and never alters an existing one; run twice, the second
run creates nothing. Both then check every topic: a partition count other
than the settings' is an error naming the topic, both counts and the fix.
Fewer replicas than the settings say, and topic settings other than the
ones spinewatch creates, are printed as warnings (an existing topic is
never altered).

The broker may start after this command (an init container): it retries
for `--wait-s` seconds with backoff before giving up.

Exit codes: 0 every topic as the settings say (warnings aside); 1 a topic
missing (check) or with another partition count, or a creation the broker
refused; 2 bad settings; 3 no broker answered within `--wait-s`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any, TextIO

from spinewatch.errors import BrokerUnavailable, TopicMismatch

if TYPE_CHECKING:
    from spinewatch.adapters.kafka_admin import TopicsReport
    from spinewatch.engine.settings import Settings

PROGRAM = "spinewatch topics"
DEFAULT_WAIT_S = 60.0
NO_BROKERS = (
    "no Kafka brokers: set SPINEWATCH_KAFKA_BROKERS=host:port[,host:port] (the embedded "
    "broker creates its own topics)"
)


def add_parser(commands: Any) -> None:
    topics = commands.add_parser(
        "topics", help="create or check the deployment's Kafka topics (SPINEWATCH_* settings)"
    )
    actions = topics.add_subparsers(required=True, metavar="ACTION")
    for action, help_text in (
        ("create", "create the missing topics, then check every topic"),
        ("check", "check every topic; create nothing"),
    ):
        parser = actions.add_parser(action, help=help_text)
        parser.add_argument(
            "--wait-s",
            type=float,
            default=DEFAULT_WAIT_S,
            help=f"retry an unreachable broker this long (default {DEFAULT_WAIT_S:g})",
        )
        parser.set_defaults(run=run_topics, create=action == "create")


def run_topics(args: argparse.Namespace) -> int:
    # Imported here: `spinewatch --help` and the other commands need neither.
    from spinewatch.engine.settings import Settings  # noqa: PLC0415
    from spinewatch.runtime.settings_env import load_settings  # noqa: PLC0415

    settings = load_settings(Settings, "SPINEWATCH_", PROGRAM)
    if settings is None:
        return 2
    if settings.kafka_brokers is None:
        print(f"{PROGRAM}: {NO_BROKERS}", file=sys.stderr)
        return 2
    return asyncio.run(
        topics(
            settings,
            settings.kafka_brokers,
            create=args.create,
            wait_s=args.wait_s,
            out=sys.stdout,
            err=sys.stderr,
        )
    )


async def topics(
    settings: Settings, brokers: str, *, create: bool, wait_s: float, out: TextIO, err: TextIO
) -> int:
    """Create (if `create`) and check the deployment's topics; the exit code."""
    from spinewatch.adapters.kafka_admin import config_drift, ensure_topics  # noqa: PLC0415

    topology = settings.topics
    try:
        report = await ensure_topics(
            brokers,
            topology.names(),
            topology.partitions,
            security=settings.kafka_security,
            configs=topology.configs(),
            replication_factor=topology.replication_factor,
            create=create,
            wait_s=wait_s,
        )
        drift = await config_drift(brokers, topology.configs(), security=settings.kafka_security)
    except TopicMismatch as exc:
        for problem in exc.problems:
            print(f"{PROGRAM}: {problem}", file=err)
        return 1
    except BrokerUnavailable as exc:
        print(f"{PROGRAM}: {exc}", file=err)
        return 3
    _print(report, topology.replication_factor, drift, out, err)
    return 0


def _print(
    report: TopicsReport, replication_factor: int, drift: list[str], out: TextIO, err: TextIO
) -> None:
    for name, layout in report.layouts.items():
        what = "created" if name in report.created else "exists"
        print(
            f"{name}: {what}, {layout.partitions} partitions, {layout.replicas} replicas", file=out
        )
        if layout.replicas < replication_factor:
            print(
                f"{PROGRAM}: warning: topic {name} has {layout.replicas} replicas, the settings "
                f"say {replication_factor} (SPINEWATCH_REPLICATION_FACTOR); existing topics are "
                "not altered (kafka-reassign-partitions.sh adds replicas)",
                file=err,
            )
    for line in drift:
        print(f"{PROGRAM}: warning: {line}", file=err)
    print(
        f"{PROGRAM}: {len(report.layouts)} topics as the settings say, "
        f"{len(report.created)} created",
        file=out,
    )
