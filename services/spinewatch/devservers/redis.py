"""A throwaway Redis-compatible server for the demo and the tests.

Starts Debian's `redis-server` (or `valkey-server`) on a free loopback
port with persistence off, in a directory of the caller's, and stops it
afterwards. A deployment points `SPINEWATCH_ALERTING_REDIS_URL` at its own
server instead.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from spinewatch.devservers.tansu import free_port
from spinewatch.errors import RedisUnavailable

STARTUP_TIMEOUT_S = 20.0


class EmbeddedRedis:
    def __init__(self, workdir: Path, port: int | None = None, persistent: bool = False) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        # Persistent: an append-only file in `workdir`, so a restart on the
        # same port and directory keeps the data (a Redis outage, not a loss).
        self.persistent = persistent
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or shutil.which("valkey-server")
        if binary is None:
            raise RedisUnavailable(
                "no redis-server or valkey-server on PATH (Debian package redis-server)"
            )
        appendonly = ["yes", "--appendfsync", "always"] if self.persistent else ["no"]
        self._process = subprocess.Popen(  # noqa: S603 - a resolved binary, our own arguments
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", *appendonly, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._answers():
            if self._process.poll() is not None:
                raise RedisUnavailable(f"{binary} exited with {self._process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RedisUnavailable(f"{binary} did not answer within {STARTUP_TIMEOUT_S} s")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
