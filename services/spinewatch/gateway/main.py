"""`spinewatch gateway`: serve the HTTP gateway until SIGTERM or SIGINT.

Settings come from `SPINEWATCH_GATEWAY_*`; several gateways may run behind
one load balancer against one Redis (idempotency and rate budgets are
shared there). SIGTERM is a graceful shutdown: no new connections, the
requests in flight are answered (each waits at most for its broker
acknowledgement), then the process exits 0. `--check` asks a running
gateway's /healthz and exits 0 when it answers 200. Exit 2 for bad
settings or an unreadable credentials file, 70 when the supervisor gave up.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from spinewatch.errors import CredentialsError
from spinewatch.gateway.auth import load_credentials
from spinewatch.gateway.process import running_gateway
from spinewatch.gateway.settings import GatewaySettings
from spinewatch.runtime.health import check_url
from spinewatch.runtime.log_privacy import configure_logging
from spinewatch.runtime.settings_env import load_settings
from spinewatch.runtime.supervisor import leave, until_stopped_or_given_up

ENV_PREFIX = "SPINEWATCH_GATEWAY_"


async def serve(settings: GatewaySettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running_gateway(settings) as running:
        print(f"spinewatch gateway {settings.app_id}: {running.url} (POST /v1/events)", flush=True)
        return await until_stopped_or_given_up(stop, running.gave_up)


def check(settings: GatewaySettings) -> int:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
    return check_url(f"http://{host}:{settings.port}/healthz", "spinewatch gateway")


def main(check_only: bool) -> int:
    # Every field, the brokers and credentials file included, from the environment.
    settings = load_settings(GatewaySettings, ENV_PREFIX, "spinewatch gateway")
    if settings is None:
        return 2
    if check_only:
        return check(settings)
    try:
        load_credentials(settings.credentials_file)  # fail here, with exit 2, not mid-start
    except CredentialsError as exc:
        print(f"spinewatch gateway: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    return leave(asyncio.run(serve(settings)))
