"""spinewatch services as real OS processes: workers (`spinewatch worker`, for kill
tests) and any other command (`ServiceProcess`: `spinewatch alerting`, `gateway`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from spinewatch.devservers.tansu import free_port
from spinewatch.engine.settings import Settings
from tests.support import scaled, wait_until


def settings_env(settings: BaseSettings, prefix: str) -> dict[str, str]:
    """The environment a service reads `settings` from (secrets in clear, tuples as JSON)."""
    env: dict[str, str] = {}
    for name, dumped in settings.model_dump(mode="json").items():
        value, secret = dumped, getattr(settings, name)
        if isinstance(secret, SecretStr):  # dumped as "**********"
            value = secret.get_secret_value()
        elif isinstance(secret, tuple) and secret and isinstance(secret[0], SecretStr):
            value = [item.get_secret_value() for item in secret]
        if value is not None:
            # Complex fields (tuples) are read from the environment as JSON.
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            env[f"{prefix}{name.upper()}"] = text
    return env


class WorkerProcess:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings.model_copy(
            update={"metrics_port": free_port(), "web_port": free_port()}
        )
        self.process: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: an unread pipe fills up and blocks the worker.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._final_stderr = ""

    @property
    def url(self) -> str:
        return f"http://{self.settings.metrics_host}:{self.settings.metrics_port}"

    def start(self) -> None:
        env = dict(os.environ) | settings_env(self.settings, "SPINEWATCH_")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spinewatch", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=scaled(2)) as response:  # noqa: S310
                result: dict[str, Any] = json.loads(response.read())
                return result
        except (urllib.error.URLError, OSError):
            return None

    async def wait_for_partitions(self, timeout_s: float = 60.0) -> set[int]:
        async def probe() -> dict[str, Any] | None:
            self._check_alive()
            return await asyncio.to_thread(self.health)

        health = await wait_until(
            probe, lambda h: bool(h and h["active_partitions"]), timeout_s, "partitions"
        )
        assert health is not None
        return set(health["active_partitions"])

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=scaled(10))

    def stop(self) -> None:
        _terminate(self.process)
        # pytest shows a test's stdout only when it fails: then the worker's
        # own warnings and errors (an agent crash, a rebalance) are there too.
        stderr = self._final_stderr = self.stderr()
        if stderr:
            print(
                f"--- stderr of worker on port {self.settings.metrics_port} ---\n{stderr[-6000:]}"
            )
        self._log.close()

    def stderr(self) -> str:
        """Everything the worker wrote to stderr so far; after stop(), all of it."""
        if self._log.closed:
            return self._final_stderr
        # pread, not seek and read: the worker writes through a duplicate of
        # this descriptor, which shares its file offset.
        fd = self._log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            stderr = self.stderr()
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{stderr[-3000:]}")


class ServiceProcess:
    """`spinewatch <command>` as an OS process, its settings in its environment.

    `url` is where it serves /readyz (and /metrics); `wait_ready` polls it.
    """

    def __init__(self, command: str, environment: Mapping[str, str], url: str) -> None:
        self.command = command
        self.environment = dict(environment)
        self.url = url
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._final_log = ""

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, our own command
            [sys.executable, "-m", "spinewatch", self.command],
            env=dict(os.environ) | self.environment,
            stdout=self._log,
            stderr=self._log,
        )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=scaled(2)) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until /readyz answers 200 (the scaled deadline fails with the process's log)."""
        deadline = time.monotonic() + scaled(timeout_s)
        while not self.ready():
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                exited = self.process.poll() is not None
                state = f"exited with {self.process.returncode}" if exited else "not ready"
                raise AssertionError(f"spinewatch {self.command} {state}:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        _terminate(self.process)
        self._final_log = self.log()
        if self._final_log:  # shown by pytest when the test fails
            print(f"--- log of spinewatch {self.command} ---\n{self._final_log[-6000:]}")
        self._log.close()

    def log(self) -> str:
        if self._log.closed:
            return self._final_log
        fd = self._log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


def _terminate(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, as an orchestrator stops a service; SIGKILL if it is still up after 20 s."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=scaled(20))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
