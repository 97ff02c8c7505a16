"""Real servers for the tests: redis-server, Prometheus Alertmanager and Prometheus.

Each starts on a free loopback port in a temporary directory, is waited on
until it answers, and is stopped afterwards. All come from Debian packages
(`./dev test` installs them as root); a missing binary fails the test with
that instruction rather than skipping it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from spinewatch.devservers.redis import EmbeddedRedis
from spinewatch.devservers.tansu import free_port
from tests.support import scaled

STARTUP_TIMEOUT_S = 20.0

ALERTMANAGER_CONFIG = """
route:
  receiver: "null"
  group_by: ["site", "alertname"]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "null"
"""


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: `./dev test` installs it as root (Debian package)")
    return path


def _wait(ready: Any, process: subprocess.Popen[bytes], what: str) -> None:
    limit_s = scaled(STARTUP_TIMEOUT_S)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not answer within {limit_s:g} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=scaled(10))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server; yields its redis:// URL."""
    _binary("redis-server")  # fail with the install instruction, not a bare error
    server = EmbeddedRedis(workdir)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


class Alertmanager:
    def __init__(self, url: str) -> None:
        self.url = url

    def alerts(self, active_only: bool = True) -> list[dict[str, Any]]:
        query = "" if not active_only else "?active=true&silenced=false&inhibited=false"
        url = f"{self.url}/api/v2/alerts{query}"
        with urllib.request.urlopen(url, timeout=scaled(5)) as response:  # noqa: S310
            result: list[dict[str, Any]] = json.loads(response.read())
            return result


@contextmanager
def alertmanager(workdir: Path, config_text: str = ALERTMANAGER_CONFIG) -> Iterator[Alertmanager]:
    """A real Prometheus Alertmanager, clustering off; yields its API client.

    `config_text`: its configuration (by default, no receiver at all).
    """
    port = free_port()
    config = workdir / "alertmanager.yml"
    config.write_text(config_text)
    process = subprocess.Popen(  # noqa: S603 - our own binary path and arguments
        [_binary("prometheus-alertmanager"), f"--config.file={config}",
         f"--storage.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=scaled(1)) as response:  # noqa: S310
            return bool(response.status == 200)

    try:
        _wait(ready, process, "alertmanager")
        yield Alertmanager(url)
    finally:
        _stop(process)


class Prometheus:
    """The HTTP API of a running Prometheus (api/v1), answers decoded."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, params: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        """The JSON answer, an error's included (its status is "error")."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=scaled(10)) as answer:  # noqa: S310
                body = answer.read()
        except urllib.error.HTTPError as error:  # 400 bad_data, 422 execution: JSON too
            body = error.read()
        result: dict[str, Any] = json.loads(body)
        return result


@contextmanager
def prometheus(workdir: Path, config_text: str) -> Iterator[Prometheus]:
    """A real Prometheus server (Debian `prometheus`) with this configuration.

    Its TSDB lives in `workdir`; its log goes to `workdir/prometheus.log`,
    whose tail is in the error when it does not come up.
    """
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(config_text)
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own binary path and arguments
            [_binary("prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log,
            stderr=log,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=scaled(1)) as response:  # noqa: S310
            return bool(response.status == 200)

    try:
        try:
            _wait(ready, process, "prometheus")
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}: {log_path.read_text()[-3000:]}") from None
        yield Prometheus(url)
    finally:
        _stop(process)
