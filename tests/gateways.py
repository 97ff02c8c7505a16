"""A real gateway for the tests: uvicorn on a free loopback port, in this process.

    creds = write_credentials(tmp_path)                 # two sources, three sites
    settings = gateway_settings(kafka_bootstrap, redis_url, creds, app_id=...)
    async with running_gateway(settings, creds) as gw:  # returns once /readyz is 200
        status, headers, body = await gw.post("/v1/events", event, by="north")

`write_credentials` writes a credentials file (TOML, hashes only) for
`TWO_SOURCES` or any grants you pass, and keeps the tokens in memory for
the test. `running_gateway` serves the real app (real socket, real HTTP)
with its real clients: the broker, Redis, the rate limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from spinewatch.gateway.auth import SourceGrant
from spinewatch.gateway.process import RunningGateway as ServedGateway
from spinewatch.gateway.process import running_gateway as serve_gateway
from spinewatch.gateway.settings import GatewaySettings
from spinewatch.runtime.credentials import issue_token
from tests.probes import get_json, health
from tests.support import scaled, wait_until

# Two hospitals: "north" writes two sites, "south" one.
TWO_SOURCES: dict[str, SourceGrant] = {
    "north": SourceGrant(source="ris-north", sites=("north-a", "north-b")),
    "south": SourceGrant(source="ris-south", sites=("south-a",)),
}


@dataclass(frozen=True)
class Credentials:
    path: Path
    tokens: dict[str, str]  # label -> bearer token
    grants: dict[str, SourceGrant]  # label -> what it may write


def write_credentials(
    directory: Path, grants: Mapping[str, SourceGrant] = TWO_SOURCES
) -> Credentials:
    """A credentials file in `directory` with one fresh token per grant."""
    tokens: dict[str, str] = {}
    lines: list[str] = []
    for label, grant in grants.items():
        issued = issue_token()
        tokens[label] = issued.token
        lines += ["[[token]]", f'id = "{issued.token_id}"', f'sha256 = "{issued.sha256}"']
        lines += [f"{key} = {json.dumps(value)}" for key, value in
                  grant.model_dump(mode="json", exclude_none=True).items()]  # fmt: skip
        lines.append("")
    path = directory / "gateway-credentials.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return Credentials(path, tokens, dict(grants))


def gateway_settings(
    kafka_bootstrap: str, redis_url: str, credentials: Credentials, **overrides: Any
) -> GatewaySettings:
    """Settings on a free loopback port, with an app id of their own (own events topic)
    unless `app_id` is given (a worker's, to feed it)."""
    values: dict[str, Any] = {
        "app_id": f"gw{uuid.uuid4().hex[:12]}",
        "kafka_brokers": kafka_bootstrap,
        "credentials_file": credentials.path,
        "redis_url": redis_url,
        "host": "127.0.0.1",
        "port": 0,
        "produce_timeout_s": scaled(10.0),
    }
    values.update(overrides)
    return GatewaySettings(**values)


@dataclass
class RunningGateway:
    url: str
    settings: GatewaySettings
    credentials: Credentials
    served: ServedGateway
    session: aiohttp.ClientSession

    def token(self, label: str) -> str:
        return self.credentials.tokens[label]

    async def post(
        self,
        path: str,
        body: Any = None,
        *,
        by: str | None = None,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """POST JSON (`body`) or bytes (`raw`) with the token of credential `by`.

        Returns the status, the headers and the JSON answer (None if empty).
        """
        sent = {"Content-Type": "application/json", **(headers or {})}
        if by is not None:
            sent["Authorization"] = f"Bearer {self.token(by)}"
        data = raw if raw is not None else json.dumps(body, default=str).encode()
        async with self.session.post(f"{self.url}{path}", data=data, headers=sent) as response:
            text = await response.read()
            answer = json.loads(text) if text else None
            return response.status, dict(response.headers), answer

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(f"{self.url}{path}") as response:
            return response.status, await response.text()


@contextlib.asynccontextmanager
async def running_gateway(
    settings: GatewaySettings, credentials: Credentials, *, wait_ready: bool = True
) -> AsyncIterator[RunningGateway]:
    """Serve a gateway on this loop; with `wait_ready`, return once /readyz answers 200."""
    timeout = aiohttp.ClientTimeout(total=scaled(30))
    async with (
        serve_gateway(settings) as served,
        aiohttp.ClientSession(timeout=timeout) as session,
    ):
        gateway = RunningGateway(served.url, settings, credentials, served, session)
        if wait_ready:
            await wait_until(lambda: health(served.url), lambda a: a[0] == 200, 30, "ready gateway")
        yield gateway


@contextlib.contextmanager
def gateway_in_thread(settings: GatewaySettings) -> Iterator[str]:
    """A gateway on an event loop of its own thread, for synchronous clients; yields its URL.

    Returns once /readyz answers 200. For tools that block the calling
    thread (schemathesis, requests): on the test's own loop they would
    block the gateway that must answer them.
    """
    started = threading.Event()
    found: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        found["stop"] = (asyncio.get_running_loop(), stop)
        async with serve_gateway(settings) as served:
            found["url"] = served.url
            started.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            found["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    try:
        started.wait(scaled(30))
        if "url" not in found:
            raise RuntimeError(f"the gateway did not start: {found.get('error')!r}")
        url = str(found["url"])
        deadline = time.monotonic() + scaled(30)
        while get_json(f"{url}/readyz")[0] != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway not ready: {get_json(f'{url}/readyz')}")
            time.sleep(0.1)
        yield url
    finally:
        if "stop" in found:
            loop, stop = found["stop"]
            loop.call_soon_threadsafe(stop.set)
        thread.join(scaled(30))
