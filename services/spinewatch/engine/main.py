"""`spinewatch worker`: run one outcomes worker until SIGTERM or SIGINT.

It exits 0 when asked to stop, and 70 (EX_SOFTWARE) when its supervisor
gave up on a loop that could not recover (see `spinewatch.runtime.supervisor`), so
that an orchestrator restarts it.

`spinewatch worker --check` asks a running worker's /healthz instead and
exits 0 when it answers 200 (for container health checks and scripts).

Bad settings (a value outside its rule, an unknown `SPINEWATCH_*`
variable, brokers and the embedded broker both, incoherent Kafka security
settings), a missing broker, brokers without a signing key, and a
faust-streaming or aiokafka release the patches were not tested with
(`spinewatch.patches`) end start-up with a message and exit code 2, before
anything is started; so do topics with another partition count than
`SPINEWATCH_PARTITIONS` (checked before the worker joins its group).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from spinewatch import patches
from spinewatch.engine.bootstrap import (
    kafka_brokers,
    require_broker,
    require_signing_key,
    running_worker,
    tansu_compat,
)
from spinewatch.engine.settings import Settings
from spinewatch.errors import (
    BrokerNotConfigured,
    PatchVersionMismatch,
    SigningKeyMissing,
    TopicMismatch,
)
from spinewatch.runtime.health import check_url
from spinewatch.runtime.log_privacy import configure_logging as configure_private_logging
from spinewatch.runtime.settings_env import load_settings
from spinewatch.runtime.supervisor import leave, until_stopped_or_given_up


def configure_logging(settings: Settings) -> None:
    # spinewatch logs counts and partitions only; faust and aiokafka log
    # whole messages at debug, which PrivacyFilter reduces to sizes (see
    # runtime/log_privacy.py for what it scrubs, at every level).
    configure_private_logging(settings.log_level)
    # Noise from faust under load on a single-record-batch broker.
    logging.getLogger("faust.transport.producer").setLevel(logging.ERROR)
    logging.getLogger("mode.timers").setLevel(logging.ERROR)


async def serve(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with kafka_brokers(settings) as brokers, running_worker(settings, brokers) as worker:
        print(
            f"spinewatch worker {settings.app_id}: brokers {brokers}, "
            f"metrics {worker.metrics.url}/metrics",
            flush=True,
        )
        return await until_stopped_or_given_up(stop, worker.gave_up)


def check(settings: Settings) -> int:
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/healthz"
    return check_url(url, "spinewatch worker")


def main(check_only: bool, embedded_broker: bool = False) -> int:
    # The flag is one more source of the setting; with brokers also set
    # the settings refuse the pair.
    settings = load_settings(
        lambda: Settings(embedded_broker=True) if embedded_broker else Settings(),
        "SPINEWATCH_",
        "spinewatch worker",
    )
    if settings is None:
        return 2
    if check_only:
        return check(settings)
    try:
        require_broker(settings)
        require_signing_key(settings)
        # Before anything starts: patches of faust/aiokafka internals run only
        # on the versions they were tested with (spinewatch.patches).
        patches.check_versions(tansu_compat=tansu_compat(settings))
    except (BrokerNotConfigured, SigningKeyMissing, PatchVersionMismatch) as exc:
        print(f"spinewatch worker: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        code = asyncio.run(serve(settings))
    except TopicMismatch as exc:
        print(f"spinewatch worker: {exc}", file=sys.stderr)
        code = 2
    return leave(code)
