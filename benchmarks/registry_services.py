"""The registry benchmark's processes: `spinewatch worker`, `spinewatch alerting`, Alertmanager.

Each is a subprocess on loopback on free ports, its data in the run's
temporary directory, its stderr in a file there (the first error line is
quoted when it fails), stopped by the benchmark whatever happens
(`Processes.close`). Redis is the project's own `EmbeddedRedis`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from pipeline import PARTITIONS, SIGNING_KEY, BenchmarkFailure, proc_status_mib, worker_error

from spinewatch.devservers.redis import EmbeddedRedis
from spinewatch.devservers.tansu import free_port

READY_S = 180.0  # a process must answer within this long

ALERTMANAGER_CONFIG = """
route:
  receiver: "null"
  group_by: ["site", "alertname"]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "null"
"""


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    stderr: Path
    started: float  # perf_counter at spawn

    def failure(self, what: str) -> BenchmarkFailure:
        error = worker_error(self.stderr)
        tail = self.stderr.read_text(errors="replace")[-1500:]
        if error and error not in tail:
            tail = f"first error: {error}\n...\n{tail}"
        state = f"exited {self.process.returncode}" if self.process.returncode is not None else ""
        return BenchmarkFailure(f"{self.name}: {what} {state}\n{tail}")


@dataclass
class Processes:
    """Every child of the run, stopped in reverse order by `close`."""

    tmp: Path
    children: list[Child] = field(default_factory=list)
    redis: EmbeddedRedis | None = None

    async def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        stderr = self.tmp / f"{name}-{len(self.children)}.stderr"
        with stderr.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=self.tmp,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        child = Child(name, process, stderr, time.perf_counter())
        self.children.append(child)
        return child

    async def first_line(self, child: Child) -> str:
        assert child.process.stdout is not None  # noqa: S101 - stdout=PIPE in spawn
        try:
            line = await asyncio.wait_for(child.process.stdout.readline(), READY_S)
        except TimeoutError:
            raise child.failure(f"no start-up line within {READY_S:.0f} s") from None
        if not line:
            await child.process.wait()
            raise child.failure("ended before it was up")
        return line.decode().strip()

    async def stop(self, child: Child, sig: int = signal.SIGTERM) -> None:
        if child.process.returncode is None:
            child.process.send_signal(sig)
            try:
                await asyncio.wait_for(child.process.wait(), 30)
            except TimeoutError:
                child.process.kill()
                await child.process.wait()
        if child in self.children:
            self.children.remove(child)

    async def close(self) -> None:
        for child in reversed(list(self.children)):
            await self.stop(child)
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def kill_all(self) -> None:
        """Synchronous last resort (the benchmark failed)."""
        for child in self.children:
            if child.process.returncode is None:
                child.process.kill()
        if self.redis is not None:
            self.redis.stop()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SPINEWATCH_")}


# --- the worker -------------------------------------------------------------------


@dataclass
class WorkerConfig:
    bootstrap: str
    app_id: str
    data_dir: Path
    metrics_port: int
    overrides: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def env(self) -> dict[str, str]:
        values = {
            "KAFKA_BROKERS": self.bootstrap,
            "APP_ID": self.app_id,
            "PARTITIONS": str(PARTITIONS),
            "STORE": "rocksdb://",
            "DATA_DIR": str(self.data_dir),
            "METRICS_PORT": str(self.metrics_port),
            "WEB_PORT": str(free_port()),
            # Lowered, so that after an unclean stop the group forgets the
            # dead member within seconds (the default is 10 s).
            "SESSION_TIMEOUT_S": "3",
            "TANSU_COMPAT": "true",  # the benchmark's own embedded Tansu
            "SIGNING_KEY": SIGNING_KEY,
        } | {name.upper(): value for name, value in self.overrides.items()}
        return clean_env() | {f"SPINEWATCH_{k}": v for k, v in values.items()}


async def start_worker(processes: Processes, config: WorkerConfig) -> Child:
    child = await processes.spawn(
        "worker", [sys.executable, "-m", "spinewatch", "worker"], config.env()
    )
    await processes.first_line(child)
    return child


def memory_mib(child: Child) -> dict[str, float]:
    return proc_status_mib(child.process.pid)


async def ready(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(f"{url}/readyz") as response:
            await response.read()
            return response.status == 200
    except aiohttp.ClientError:
        return False


# --- Redis, Alertmanager, the alerting service ---------------------------------------


async def start_redis(processes: Processes) -> str:
    workdir = processes.tmp / "redis"
    workdir.mkdir()
    processes.redis = EmbeddedRedis(workdir)
    await asyncio.to_thread(processes.redis.start)
    return processes.redis.url


async def start_alertmanager(processes: Processes, session: aiohttp.ClientSession) -> str:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        raise BenchmarkFailure("prometheus-alertmanager not found (Debian package)")
    workdir = processes.tmp / "alertmanager"
    workdir.mkdir()
    (workdir / "alertmanager.yml").write_text(ALERTMANAGER_CONFIG)
    port = free_port()
    child = await processes.spawn(
        "alertmanager",
        [
            binary,
            f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        clean_env(),
    )
    url = f"http://127.0.0.1:{port}"
    await wait_http(session, f"{url}/-/ready", child)
    return url


async def start_alerting(
    processes: Processes,
    session: aiohttp.ClientSession,
    *,
    bootstrap: str,
    app_id: str,
    redis_url: str,
    alertmanager_url: str,
) -> tuple[Child, str]:
    port = free_port()
    values = {
        "KAFKA_BROKERS": bootstrap,
        "APP_ID": app_id,
        "SIGNING_KEY": SIGNING_KEY,
        "REDIS_URL": redis_url,
        "ALERTMANAGER_URLS": json.dumps([alertmanager_url]),
        "HTTP_PORT": str(port),
    }
    env = clean_env() | {f"SPINEWATCH_ALERTING_{k}": v for k, v in values.items()}
    child = await processes.spawn("alerting", [sys.executable, "-m", "spinewatch", "alerting"], env)
    await processes.first_line(child)
    url = f"http://127.0.0.1:{port}"
    await wait_http(session, f"{url}/readyz", child)
    return child, url


async def wait_http(session: aiohttp.ClientSession, url: str, child: Child) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if child.process.returncode is not None:
            raise child.failure("ended before it was ready")
        try:
            async with session.get(url) as response:
                await response.read()
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise child.failure(f"{url} not 200 within {READY_S:.0f} s")
