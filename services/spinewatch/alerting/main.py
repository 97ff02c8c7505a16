"""`spinewatch alerting`: run one alerting process until SIGTERM or SIGINT.

Settings come from `SPINEWATCH_ALERTING_*`; several processes may run
against one Redis (they page once between them). `--check` asks a running
process's /healthz and exits 0 when it answers 200. It exits 70 when its
supervisor gave up on a loop that could not recover, and 2 before starting
anything for bad settings, a missing signing key, or a credentials file
that cannot be read (the message names the setting or the table and
field, never a value).
"""

from __future__ import annotations

import asyncio
import signal
import sys

from spinewatch.alerting.identities import Identities
from spinewatch.alerting.process import running_alerting, signing_keyring
from spinewatch.alerting.settings import AlertingSettings
from spinewatch.errors import CredentialsError, SigningKeyMissing
from spinewatch.runtime.health import check_url
from spinewatch.runtime.log_privacy import configure_logging
from spinewatch.runtime.settings_env import load_settings
from spinewatch.runtime.supervisor import leave, until_stopped_or_given_up


async def serve(settings: AlertingSettings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running_alerting(settings) as running:
        print(f"spinewatch alerting {settings.app_id}: {running.url} (GET /alerts)", flush=True)
        return await until_stopped_or_given_up(stop, running.gave_up)


def check(settings: AlertingSettings) -> int:
    url = f"http://{settings.http_host}:{settings.http_port}/healthz"
    return check_url(url, "spinewatch alerting")


def main(check_only: bool) -> int:
    # Every field, the brokers included, comes from the environment.
    settings = load_settings(AlertingSettings, "SPINEWATCH_ALERTING_", "spinewatch alerting")
    if settings is None:
        return 2
    if check_only:
        return check(settings)
    try:
        signing_keyring(settings)
        Identities.from_settings(settings)
    except (SigningKeyMissing, CredentialsError) as exc:
        print(f"spinewatch alerting: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    return leave(asyncio.run(serve(settings)))
