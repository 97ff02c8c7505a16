"""The supervisor: restarts with backoff, one line per failure, counts, health, giving up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from spinewatch.errors import SpinewatchError
from spinewatch.runtime.failures import FailurePolicy
from spinewatch.runtime.health import Check, report
from spinewatch.runtime.supervisor import (
    EXIT_GAVE_UP,
    Heartbeat,
    Supervisor,
    until_stopped_or_given_up,
)
from tests.support import scaled, wait_until

FAST = FailurePolicy(retry_base_s=0.01, retry_max_s=0.05)


def _supervisor(
    registry: CollectorRegistry, give_up_after_s: float = 60.0, gave_up: list[str] | None = None
) -> Supervisor:
    reasons = gave_up if gave_up is not None else []
    return Supervisor(
        "svc", registry, give_up_after_s=give_up_after_s, on_give_up=reasons.append, policy=FAST
    )


def _restarts(registry: CollectorRegistry, loop: str) -> float:
    value = registry.get_sample_value(
        "spinewatch_loop_restarts_total", {"service": "svc", "loop": loop}
    )
    return value or 0.0


def _check(supervisor: Supervisor, name: str) -> Check:
    return next(c for c in supervisor.checks() if c.name == name)


async def _condition(test: Callable[[], bool]) -> bool:
    return test()


async def test_a_failing_loop_is_restarted_counted_and_logged_once_per_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    supervisor = _supervisor(registry)
    runs = 0
    done = asyncio.Event()

    async def flaky(heartbeat: Heartbeat) -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise ConnectionError("redis:6379 refused")
        heartbeat.beat()
        done.set()
        await asyncio.Event().wait()

    supervisor.spawn("consume", flaky, stale_after_s=None)
    with caplog.at_level(logging.ERROR, logger="spinewatch.runtime.supervisor"):
        await supervisor.start()
        try:
            await asyncio.wait_for(done.wait(), 10)
            assert _restarts(registry, "consume") == 3
            assert _check(supervisor, "loop:consume").ok  # it beat since its restart
        finally:
            await supervisor.stop()
    lines = [r for r in caplog.records if r.name == "spinewatch.runtime.supervisor"]
    assert len(lines) == 3
    assert all(r.exc_info is None for r in lines)  # one line, never a traceback
    assert "ConnectionError: redis:6379 refused" in lines[0].getMessage()


async def test_a_loop_red_while_failing_shows_why() -> None:
    registry = CollectorRegistry()
    supervisor = _supervisor(registry)

    async def down(heartbeat: Heartbeat) -> None:
        raise KeyError("a value that must not show")

    supervisor.spawn("deliver", down, stale_after_s=None)
    await supervisor.start()
    try:
        await wait_until(
            lambda: _condition(lambda: _restarts(registry, "deliver") >= 2),
            bool, 10, "two restarts",
        )  # fmt: skip
        check = _check(supervisor, "loop:deliver")
        assert not check.ok
        assert check.liveness
        assert "KeyError" in check.reason
        assert "must not show" not in check.reason  # the type only, for other errors
        status, body = report(supervisor.checks(), readiness=False)
        assert status == 503
        assert any(line.startswith("loop:deliver: failing") for line in body["failing"])
    finally:
        await supervisor.stop()


async def test_a_loop_killed_from_outside_is_restarted_and_counted() -> None:
    registry = CollectorRegistry()
    supervisor = _supervisor(registry)
    started = 0

    async def steady(heartbeat: Heartbeat) -> None:
        nonlocal started
        started += 1
        while True:
            heartbeat.beat()
            await asyncio.sleep(0.01)

    supervisor.spawn("probe", steady, stale_after_s=5)
    await supervisor.start()
    try:
        await wait_until(lambda: _condition(lambda: started == 1), bool, 10, "the first run")
        assert supervisor.kill("probe")
        await wait_until(lambda: _condition(lambda: started == 2), bool, 10, "a restart")
        assert _restarts(registry, "probe") == 1
        await wait_until(
            lambda: _condition(lambda: _check(supervisor, "loop:probe").ok), bool, 10, "green"
        )
        # Killed before its first step, the task never ran its handler:
        # the watchdog starts it again all the same.
        supervisor.kill("probe")
        await asyncio.sleep(0)
        supervisor.kill("probe")
        await wait_until(lambda: _condition(lambda: started >= 3), bool, 10, "a revival")
    finally:
        await supervisor.stop()
    restarts = _restarts(registry, "probe")
    assert restarts >= 2
    await asyncio.sleep(0.05)
    assert _restarts(registry, "probe") == restarts  # stopping is not a failure


async def test_a_stale_heartbeat_turns_the_loop_red() -> None:
    registry = CollectorRegistry()
    supervisor = _supervisor(registry)
    stuck = asyncio.Event()

    async def hangs(heartbeat: Heartbeat) -> None:
        heartbeat.beat()
        await stuck.wait()  # never beats again

    supervisor.spawn("drift", hangs, stale_after_s=0.2)
    await supervisor.start()
    try:

        async def drift_check() -> Check:
            return _check(supervisor, "loop:drift")

        check = await wait_until(drift_check, lambda c: not c.ok, 10, "a stale heartbeat")
        assert "no progress for" in check.reason
    finally:
        await supervisor.stop()


async def test_a_liveness_check_red_past_the_give_up_time_ends_the_process() -> None:
    registry = CollectorRegistry()
    gave_up: list[str] = []
    supervisor = _supervisor(registry, give_up_after_s=0.5, gave_up=gave_up)
    ready = [Check("redis", False, "unreachable", liveness=False)]
    supervisor.add_checks(lambda: ready)

    async def down(heartbeat: Heartbeat) -> None:
        raise ConnectionError("broker gone")

    supervisor.spawn("consume", down, stale_after_s=None)
    await supervisor.start()
    try:
        await wait_until(lambda: _condition(lambda: bool(gave_up)), bool, 10, "giving up")
    finally:
        await supervisor.stop()
    (reason,) = gave_up  # once, naming the loop; readiness-only checks never give up
    assert reason.startswith("loop:consume red for")
    assert "redis" not in reason
    assert not _check(supervisor, "gave-up").ok
    stop, fired = asyncio.Event(), asyncio.Event()
    fired.set()
    assert await until_stopped_or_given_up(stop, fired) == EXIT_GAVE_UP
    stop.set()
    assert await until_stopped_or_given_up(stop, asyncio.Event()) == 0


async def test_a_loop_run_elsewhere_reports_crashes_and_restarts() -> None:
    registry = CollectorRegistry()
    supervisor = _supervisor(registry)
    supervisor.watch("ingest")
    with pytest.raises(RuntimeError):
        async with supervisor.running("ingest"):
            raise RuntimeError("agent died")
    assert not _check(supervisor, "loop:ingest").ok
    async with supervisor.running("ingest") as heartbeat:  # faust restarted it
        assert _restarts(registry, "ingest") == 1
        assert not _check(supervisor, "loop:ingest").ok  # not until it makes progress
        heartbeat.beat()
        assert _check(supervisor, "loop:ingest").ok


def test_a_check_source_that_raises_is_a_failing_check_not_an_error() -> None:
    supervisor = _supervisor(CollectorRegistry())

    def broken() -> list[Check]:
        raise ZeroDivisionError

    supervisor.add_checks(broken)
    (check,) = [c for c in supervisor.checks() if c.name.startswith("check:")]
    assert not check.ok
    assert check.reason == "ZeroDivisionError"


def test_readiness_counts_every_check_liveness_only_its_own() -> None:
    checks = [Check("loop:a", True), Check("redis", False, "down", liveness=False)]
    live_status, live = report(checks, readiness=False)
    ready_status, ready = report(checks, readiness=True, extra={"pending": 3})
    assert (live_status, live["status"]) == (200, "ok")
    assert (ready_status, ready["status"], ready["failing"]) == (503, "failing", ["redis: down"])
    assert ready["pending"] == 3


async def test_a_check_turning_red_then_green_is_logged_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = _supervisor(CollectorRegistry())
    state = {"ok": False, "evaluated": 0}

    def broker() -> list[Check]:
        state["evaluated"] += 1
        return [Check("broker", bool(state["ok"]), "no answer for 10 s", liveness=False)]

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "health check broker" in r.getMessage()]

    async def rounds_after(count: int) -> None:
        start = state["evaluated"]
        await wait_until(
            lambda: _condition(lambda: state["evaluated"] >= start + count), bool, 15, "rounds"
        )

    supervisor.add_checks(broker)
    with caplog.at_level(logging.WARNING, logger="spinewatch.runtime.supervisor"):
        await supervisor.start()
        try:
            await rounds_after(3)  # red through three rounds of the watcher
            state["ok"] = True
            await rounds_after(3)  # green through three more
        finally:
            await supervisor.stop()
    red, green = lines()  # one line each way, however many rounds it stayed so
    assert red == "svc health check broker failing: no answer for 10 s"
    assert green.startswith("svc health check broker ok again after ")


def test_a_check_that_is_gone_leaves_no_gauge_behind_and_sources_keep_their_names() -> None:
    registry = CollectorRegistry()
    supervisor = _supervisor(registry)
    raising = {"now": True}

    class Source:
        def checks(self) -> list[Check]:
            if raising["now"]:
                raise ZeroDivisionError
            return [Check("redis", True)]

    class Other:
        def checks(self) -> list[Check]:
            return []

    supervisor.add_checks(Source().checks)
    supervisor.add_checks(Other().checks)
    names = [c.name for c in supervisor.checks()]
    assert names == ["check:Source.checks"]  # not a shared "check:checks"

    def gauge(check: str) -> float | None:
        return registry.get_sample_value(
            "spinewatch_health_check_ok", {"service": "svc", "check": check}
        )

    assert gauge("check:Source.checks") == 0
    raising["now"] = False
    supervisor.checks()
    assert gauge("redis") == 1
    assert gauge("check:Source.checks") is None  # would otherwise page for ever


async def test_a_loop_error_quoting_an_id_reaches_readyz_scrubbed() -> None:
    supervisor = _supervisor(CollectorRegistry())
    failed = asyncio.Event()

    async def quoting(heartbeat: Heartbeat) -> None:
        failed.set()
        raise SpinewatchError("bad record 3f2b8c1e-9a4d-4f6e-8b7a-1c2d3e4f5a6b")

    supervisor.spawn("consume", quoting, stale_after_s=None)
    await supervisor.start()
    try:
        await asyncio.wait_for(failed.wait(), 10)
        await wait_until(
            lambda: _condition(lambda: not _check(supervisor, "loop:consume").ok),
            bool,
            10,
            "the loop red",
        )
        text = _check(supervisor, "loop:consume").reason
    finally:
        await supervisor.stop()
    assert "3f2b8c1e" not in text
    assert "<uuid>" in text


async def test_the_watcher_goes_on_when_giving_up_itself_fails() -> None:
    calls: list[str] = []
    evaluated = {"n": 0}

    def on_give_up(reason: str) -> None:
        calls.append(reason)
        raise RuntimeError("exit handler broke")

    def stuck() -> list[Check]:
        evaluated["n"] += 1
        return [Check("stream", False, "stuck")]

    supervisor = Supervisor(
        "svc", CollectorRegistry(), give_up_after_s=0.1, on_give_up=on_give_up, policy=FAST
    )
    supervisor.add_checks(stuck)
    await supervisor.start()
    try:
        await wait_until(lambda: _condition(lambda: bool(calls)), bool, 10, "giving up")
        after = evaluated["n"]
        # Still watching: the checks are evaluated round after round.
        await wait_until(
            lambda: _condition(lambda: evaluated["n"] >= after + 2), bool, 10, "more rounds"
        )
    finally:
        await supervisor.stop()
    assert len(calls) == 1


async def test_loops_end_when_the_event_loop_closes_without_stop() -> None:
    # What asyncio.run does at exit: cancel every task at once. A kill drill
    # cancels one loop and it is restarted; this must not be mistaken for one.
    supervisor = _supervisor(CollectorRegistry())
    entered = asyncio.Event()

    async def forever(heartbeat: Heartbeat) -> None:
        entered.set()
        await asyncio.Event().wait()

    supervisor.spawn("consume", forever, stale_after_s=None)
    await supervisor.start()
    await asyncio.wait_for(entered.wait(), scaled(5))
    tasks = [supervisor._loops["consume"].task, supervisor._watchdog]
    running = [task for task in tasks if task is not None]
    assert len(running) == 2
    for task in running:
        task.cancel()
    _, pending = await asyncio.wait(running, timeout=scaled(5))
    assert not pending
