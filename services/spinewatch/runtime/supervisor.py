"""One supervisor for every long-running loop of a service.

Each loop writes a heartbeat as it makes progress (as arq's worker does);
the supervisor restarts a loop that raises, with capped exponential
backoff, logs one line per failure (never a traceback per retry: a 16 s
Redis outage once wrote 7,566 traceback lines), counts every restart in
`spinewatch_loop_restarts_total{service, loop}`, and turns health red while
a loop is failing or its heartbeat is stale. Loops it does not run itself
(faust's agents, which faust restarts) report crashes and heartbeats to it
all the same.

A liveness check that stays red longer than `give_up_after_s` ends the
process: `on_give_up` is called once with the reason, and the entry point
exits non-zero, so that an orchestrator restarts it. A process that cannot
recover must say so by dying, not by staying up deaf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from spinewatch.runtime.failures import FailurePolicy
from spinewatch.runtime.health import Check, HealthGauges
from spinewatch.runtime.log_privacy import scrub_text

log = logging.getLogger(__name__)

Clock = Callable[[], float]
LoopBody = Callable[["Heartbeat"], Awaitable[None]]
CheckSource = Callable[[], Iterable[Check]]


class LoopKilled(Exception):
    """A supervised loop's task was cancelled by something other than the supervisor."""


class Heartbeat:
    """When a loop last made progress (monotonic seconds)."""

    __slots__ = ("_clock", "at", "beats")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.at = clock()
        self.beats = 0

    def beat(self) -> None:
        self.at = self._clock()
        self.beats += 1


@dataclass
class _Loop:
    name: str
    heartbeat: Heartbeat
    # Stale after this long without a beat (None: beats only on input, so
    # staleness is judged elsewhere, against waiting input).
    stale_after_s: float | None
    body: LoopBody | None = None  # None: run elsewhere (a faust agent)
    task: asyncio.Task[None] | None = None
    failures: int = 0  # consecutive, for the backoff
    failing_since: float | None = None
    last_error: str = ""
    restarted_at: float | None = None
    entries: int = field(default=0)  # of a loop run elsewhere: how often it began


class Supervisor:
    def __init__(
        self,
        service: str,
        registry: CollectorRegistry,
        *,
        give_up_after_s: float,
        on_give_up: Callable[[str], None],
        policy: FailurePolicy | None = None,
        settle_s: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.service = service
        self.give_up_after_s = give_up_after_s
        self.on_give_up = on_give_up
        self.policy = policy or FailurePolicy()
        # A restarted loop counts as recovered once it beats, or once it
        # has run this long without failing again.
        self.settle_s = settle_s
        self.clock = clock
        self.fatal: str | None = None
        self._stopping = False
        self._loops: dict[str, _Loop] = {}
        self._sources: list[CheckSource] = []
        self._red_since: dict[str, float] = {}
        # Every red check (readiness too), for one log line per change.
        self._failing_since: dict[str, float] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self.restarts = Counter(
            "spinewatch_loop_restarts",
            "Restarts of a long-running loop after it failed.",
            ["service", "loop"],
            registry=registry,
        )
        self.heartbeat_age = Gauge(
            "spinewatch_heartbeat_age_seconds",
            "Seconds since a loop last made progress.",
            ["service", "loop"],
            registry=registry,
        )
        self.gauges = HealthGauges(registry, service)

    # -- registration -----------------------------------------------------
    def spawn(self, name: str, body: LoopBody, *, stale_after_s: float | None) -> Heartbeat:
        """A loop this supervisor runs (from `start`) and restarts."""
        loop = self._add(name, stale_after_s)
        loop.body = body
        if self._watchdog is not None:  # already running: start it now
            loop.task = self._task(loop)
        return loop.heartbeat

    def watch(self, name: str, *, stale_after_s: float | None = None) -> Heartbeat:
        """A loop run elsewhere (a faust agent): its heartbeat, for `crashed`/`entered`."""
        return self._add(name, stale_after_s).heartbeat

    def add_checks(self, source: CheckSource) -> None:
        self._sources.append(source)

    def _add(self, name: str, stale_after_s: float | None) -> _Loop:
        if name in self._loops:
            raise ValueError(f"loop {name} registered twice")
        loop = self._loops[name] = _Loop(name, Heartbeat(self.clock), stale_after_s)
        self.restarts.labels(self.service, name)  # exported at 0 from the start
        return loop

    # -- loops run elsewhere ----------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self, name: str) -> AsyncIterator[Heartbeat]:
        """Wrap the body of a loop that another runner restarts (a faust agent).

        Entering again after a crash counts a restart; an exception leaving
        it (not a cancellation) is recorded as a failure, then re-raised
        for the runner to handle.
        """
        loop = self._loops[name]
        if loop.entries:
            self._restarted(loop)
        loop.entries += 1
        try:
            yield loop.heartbeat
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(loop, exc)
            raise

    # -- running ----------------------------------------------------------
    async def start(self) -> None:
        for loop in self._loops.values():
            if loop.body is not None and loop.task is None:
                loop.task = self._task(loop)
        self._watchdog = asyncio.create_task(self._watch(), name=f"{self.service}:watchdog")

    def kill(self, name: str) -> bool:
        """Cancel a running loop from outside, as a drill: it is restarted like a crash."""
        task = self._loops[name].task
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def stop(self) -> None:
        self._stopping = True
        tasks = [loop.task for loop in self._loops.values() if loop.task is not None]
        if self._watchdog is not None:
            tasks.append(self._watchdog)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for loop in self._loops.values():
            loop.task = None
        self._watchdog = None
        self._stopping = False

    def _task(self, loop: _Loop) -> asyncio.Task[None]:
        return asyncio.create_task(self._supervise(loop), name=f"{self.service}:{loop.name}")

    async def _supervise(self, loop: _Loop) -> None:
        body = loop.body
        if body is None:  # pragma: no cover - only spawned loops get here
            return
        while True:
            try:
                try:
                    await body(loop.heartbeat)
                    raise RuntimeError("the loop returned")  # a loop must run until cancelled
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if self._stopping or task is None or self._closing():
                        raise
                    # Cancelled by anything but our own stop: killed, so restarted.
                    task.uncancel()
                    raise LoopKilled("cancelled from outside") from None
            except Exception as exc:
                self._failed(loop, exc)
                delay = self.policy.backoff_s(loop.failures)
                log.error(
                    "%s loop %s failed (%s); restart %d in %.1f s",
                    self.service, loop.name, loop.last_error, loop.failures, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
                self._restarted(loop)

    def _closing(self) -> bool:
        # The event loop is closing without our stop() (asyncio.run cancels
        # every task at exit, the watcher included): a loop restarted then
        # would never end, and neither would the process. Measured: a failed
        # worker test hung in pytest-asyncio's teardown until killed.
        watchdog = self._watchdog
        return watchdog is None or watchdog.done() or watchdog.cancelling() > 0

    def _failed(self, loop: _Loop, exc: BaseException) -> None:
        now = self.clock()
        loop.failures += 1
        loop.last_error = _describe(exc)
        loop.restarted_at = None  # recovered only by what happens after the next restart
        if loop.failing_since is None:
            loop.failing_since = now

    def _restarted(self, loop: _Loop) -> None:
        loop.restarted_at = self.clock()
        self.restarts.labels(self.service, loop.name).inc()

    def _recovered(self, loop: _Loop, now: float) -> bool:
        if loop.failing_since is None:
            return True
        if loop.restarted_at is None:
            return False
        beat_since_restart = loop.heartbeat.at > loop.restarted_at
        if beat_since_restart or now - loop.restarted_at > self.settle_s:
            loop.failing_since = None
            loop.failures = 0
            return True
        return False

    # -- health -----------------------------------------------------------
    def checks(self) -> list[Check]:
        now = self.clock()
        found: list[Check] = []
        for loop in self._loops.values():
            age = now - loop.heartbeat.at
            self.heartbeat_age.labels(self.service, loop.name).set(round(age, 3))
            if not self._recovered(loop, now):
                reason = f"failing for {now - (loop.failing_since or now):.0f} s: {loop.last_error}"
                found.append(Check(f"loop:{loop.name}", False, reason))
            elif loop.stale_after_s is not None and age > loop.stale_after_s:
                found.append(Check(f"loop:{loop.name}", False, f"no progress for {age:.0f} s"))
            else:
                found.append(Check(f"loop:{loop.name}", True))
        for source in self._sources:
            try:
                found.extend(source())
            except Exception as exc:  # a broken check is a failing check, not a 500
                found.append(Check(f"check:{_name(source)}", False, _describe(exc)))
        if self.fatal is not None:
            found.append(Check("gave-up", False, self.fatal))
        self.gauges.update(found)
        return found

    async def _watch(self) -> None:
        """Revive loops whose task ended anyway; give up on a liveness check red too long."""
        last_error = ""
        while True:
            await asyncio.sleep(1.0)
            try:
                self._watch_once()
                last_error = ""
            except Exception as exc:
                # Nothing supervises the supervisor: it must not end. One
                # line per new kind of failure, not one per second.
                if _describe(exc) != last_error:
                    last_error = _describe(exc)
                    log.error("%s health watcher failed (%s); going on", self.service, last_error)

    def _watch_once(self) -> None:
        self._revive()
        now = self.clock()
        checks = self.checks()
        self._log_changes(checks, now)
        red = {c.name: c for c in checks if not c.ok and c.liveness}
        self._red_since = {name: self._red_since.get(name, now) for name in red}
        for name, since in self._red_since.items():
            if self.fatal is None and now - since > self.give_up_after_s:
                self.fatal = f"{name} red for {now - since:.0f} s: {red[name].reason}"
                log.critical("%s gives up: %s", self.service, self.fatal)
                self.on_give_up(self.fatal)

    def _log_changes(self, checks: list[Check], now: float) -> None:
        # A broker outage otherwise leaves only the third-party lines (limited
        # by RepeatLimit) in the log: say in one line what turned red and why,
        # and in one line when it is green again.
        red = {c.name: c for c in checks if not c.ok}
        for name, check in red.items():
            if name not in self._failing_since:
                self._failing_since[name] = now
                log.warning("%s health check %s failing: %s", self.service, name, check.reason)
        for name in [n for n in self._failing_since if n not in red]:
            since = self._failing_since.pop(name)
            log.warning("%s health check %s ok again after %.0f s", self.service, name, now - since)

    def _revive(self) -> None:
        # A task cancelled before its first step never reaches `_supervise`'s
        # handler; whatever ended it, a supervised loop runs again.
        for loop in self._loops.values():
            task = loop.task
            if loop.body is None or task is None or not task.done() or self._stopping:
                continue
            self._failed(loop, LoopKilled("its task ended"))
            log.error("%s loop %s ended (%s); restarted", self.service, loop.name, loop.last_error)
            self._restarted(loop)
            loop.task = self._task(loop)


def _describe(exc: BaseException) -> str:
    # The type, and the text only for errors of the infrastructure, whose
    # messages name hosts and codes; other messages may quote input.
    # The text also reaches /readyz, which no log filter sees: scrub it.
    text = str(exc) if isinstance(exc, OSError | TimeoutError) or _from_client(exc) else ""
    return scrub_text(f"{type(exc).__name__}: {text}"[:200]) if text else type(exc).__name__


def _from_client(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("aiokafka", "redis", "faust", "spinewatch")


def _name(source: CheckSource) -> str:
    # A bound method is named with its class: two sources' `checks` stay apart.
    name = getattr(source, "__name__", type(source).__name__)
    owner = getattr(source, "__self__", None)
    return f"{type(owner).__name__}.{name}" if owner is not None else name


# EX_SOFTWARE from sysexits.h: an internal error the process could not recover from.
EXIT_GAVE_UP = 70


async def until_stopped_or_given_up(stop: asyncio.Event, gave_up: asyncio.Event) -> int:
    """Wait for a stop request or the supervisor giving up; the process's exit code."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(gave_up.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return EXIT_GAVE_UP if gave_up.is_set() else 0


def leave(code: int, grace_s: float = 5.0) -> int:
    """The exit code for `main`; exits at once if a non-daemon thread would block exit.

    faust runs its consumer in a thread of its own; when its stop hangs (a
    broker gone for good) the worker abandons it after `stop_timeout_s`, and
    the interpreter would then wait for that thread forever at exit. A
    process that must exit for a restart has to exit: threads get
    `grace_s` to finish, then they are abandoned, with one line.
    """
    deadline = time.monotonic() + grace_s
    for thread in _non_daemon_threads():
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    stuck = [thread.name for thread in _non_daemon_threads()]
    if stuck:
        log.error("exiting with %d; abandoning threads that did not stop: %s", code, stuck)
        logging.shutdown()
        os._exit(code)
    return code


def _non_daemon_threads() -> list[threading.Thread]:
    main = threading.main_thread()
    return [t for t in threading.enumerate() if t is not main and t.is_alive() and not t.daemon]
