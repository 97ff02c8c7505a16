"""Outcome workers as real OS processes (`spinewatch worker`), for kill tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from typing import Any

from pydantic import SecretStr

from spinewatch.devservers.tansu import free_port
from spinewatch.engine.settings import Settings
from tests.support import scaled, wait_until


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
        env = dict(os.environ)
        for name, dumped in self.settings.model_dump(mode="json").items():
            value, secret = dumped, getattr(self.settings, name)
            if isinstance(secret, SecretStr):  # dumped as "**********"
                value = secret.get_secret_value()
            elif isinstance(secret, tuple) and secret and isinstance(secret[0], SecretStr):
                value = [item.get_secret_value() for item in secret]
            if value is not None:
                # Complex fields (tuples) are read from the environment as JSON.
                text = json.dumps(value) if isinstance(value, list | dict) else str(value)
                env[f"SPINEWATCH_{name.upper()}"] = text
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
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=scaled(20))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
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
