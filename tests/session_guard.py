"""What a test session must not leave running when it stops its broker.

Measured on a loaded machine before this guard existed: pytest printed its
summary and then hung for 5.5 minutes, printing "Unable connect to node"
from a Kafka client that outlived the session's broker. faust runs its
consumer in a non-daemon thread (`mode.threads.WorkerThread`), and the
interpreter waits for every non-daemon thread before it exits.

So, just before the session's broker is stopped, the guard looks for
leftovers: aiokafka clients never closed, non-daemon threads still alive
and child processes still running. It fails the session naming each one,
with the test during which it appeared and, for a client, the code that
created it, so a leak is a test error with a culprit instead of a hang.
"""

from __future__ import annotations

import gc
import os
import sys
import sysconfig
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest
from aiokafka.client import AIOKafkaClient

from tests.support import scaled

PLUGIN_NAME = "spinewatch-session-guard"
BEFORE_TESTS = "before the first test"
AFTER_TESTS = "after the last test"
# Frames outside these (the interpreter's and the virtualenv's trees, with
# pytest's machinery, and frozen modules) say who made a client.
LIBRARIES = (
    sys.prefix,
    sys.base_prefix,
    *{sysconfig.get_paths()[name] for name in ("stdlib", "purelib", "platlib")},
    "<",
)
# Python's own helper process for spawned children, alive until exit.
RESOURCE_TRACKER = "multiprocessing.resource_tracker"


class SessionGuard:
    """A pytest plugin: records where threads, processes and clients appear."""

    def __init__(self) -> None:
        self.when = BEFORE_TESTS  # "during <test id>" while a test runs
        self.clients: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self.threads: weakref.WeakKeyDictionary[threading.Thread, str] = weakref.WeakKeyDictionary()
        self.processes: dict[int, str] = {}
        self._restore: Callable[[], None] | None = None

    # -- recording ---------------------------------------------------------

    def pytest_configure(self, config: pytest.Config) -> None:
        original = AIOKafkaClient.__init__
        guard = self

        def recorded_init(client: Any, *args: Any, **kwargs: Any) -> None:
            original(client, *args, **kwargs)
            guard.clients[client] = f"{guard.when}\n{_creator()}"

        AIOKafkaClient.__init__ = recorded_init

        def restore() -> None:
            AIOKafkaClient.__init__ = original

        self._restore = restore

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._restore is not None:
            self._restore()

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._note_new(BEFORE_TESTS)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Any:
        self.when = f"during {item.nodeid}"
        try:
            return (yield)
        finally:
            self._note_new(self.when)
            self.when = f"after {item.nodeid}"

    def _note_new(self, origin: str) -> None:
        for thread in threading.enumerate():
            self.threads.setdefault(thread, origin)
        for pid in _children():
            self.processes.setdefault(pid, origin)

    # -- checking ----------------------------------------------------------

    def check(self, spared_pids: Collection[int] = ()) -> None:
        """Fail (a test error at the session's teardown) if anything is left."""
        found = self.leftovers(spared_pids)
        if found:
            listing = "\n\n".join(f"{n}. {text}" for n, text in enumerate(found, 1))
            pytest.fail(
                f"spinewatch session guard: {len(found)} leftover(s) when the session's "
                f"broker is about to stop. Each was never closed or stopped, and may keep "
                f"the interpreter alive or talk to a broker that is gone:\n\n{listing}",
                pytrace=False,
            )

    def leftovers(self, spared_pids: Collection[int] = ()) -> list[str]:
        # The check runs in the teardown of the session's last test: what
        # appeared since that test began is that test's.
        self._note_new(self.when)
        # Only what is still reachable counts: a client that is garbage can
        # no longer run (its loop is gone), and aiokafka warns about it.
        gc.collect()
        found = [
            f"aiokafka client {client!r} {state}; created {origin}"
            for client, origin in list(self.clients.items())
            if (state := _client_state(client))
        ]
        # A thread on its way out gets a moment to finish.
        deadline = time.monotonic() + scaled(3)
        for thread in threading.enumerate():
            if thread.daemon or thread in (threading.main_thread(), threading.current_thread()):
                continue
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                found.append(self._describe_thread(thread))
        for pid, command in _children().items():
            if pid not in spared_pids and RESOURCE_TRACKER not in command:
                origin = self.processes.get(pid, AFTER_TESTS)
                found.append(f"child process {pid} still running: {command}; started {origin}")
        return found

    def _describe_thread(self, thread: threading.Thread) -> str:
        service = getattr(thread, "service", None)  # mode's WorkerThread (faust)
        kind = f"faust/mode service thread of {service!r}" if service else "thread"
        frame = sys._current_frames().get(thread.ident or -1)
        stack = "".join(traceback.format_stack(frame)[-10:]) if frame else "  (no stack)\n"
        origin = self.threads.get(thread, AFTER_TESTS)
        return (
            f"non-daemon {kind} {thread.name!r} still alive (the interpreter waits for it at"
            f" exit); first seen {origin}; now at:\n{stack.rstrip()}"
        )


def _client_state(client: Any) -> str | None:
    """How a client was left, or None if it was closed or never started."""
    # bootstrap() sets the metadata task and close() clears it: a task still
    # set means the client connected and was never closed, running or not.
    task = client._sync_task
    connections = sum(1 for conn in client._conns.values() if conn.connected())
    if task is None and not connections:
        return None
    loop = client._loop
    where = (
        "its event loop is closed"
        if loop.is_closed()
        else "its event loop is still running"
        if loop.is_running()
        else "its event loop is idle"
    )
    parts = ["metadata task still running" if task and not task.done() else "metadata task ended"]
    if connections:
        parts.append(f"{connections} open connection(s)")
    return f"was never closed ({', '.join(parts)}; {where})"


def _creator() -> str:
    """The frames of our code that led to a client's creation, and its owner."""
    frames = traceback.extract_stack()[:-2]  # without recorded_init and this
    ours = [f for f in frames if not f.filename.startswith(LIBRARIES)]
    owner = frames[-1:]  # who called AIOKafkaClient(...): a producer, consumer, admin
    shown = [*ours[-4:], *(f for f in owner if f not in ours)]
    return "".join(traceback.format_list(shown)).rstrip()


def _children() -> dict[int, str]:
    """Running child processes of this one: pid -> command line."""
    me = str(os.getpid())
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid ...; comm may hold spaces and parentheses.
            state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
            if ppid != me or state == "Z":  # a zombie has already exited
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue  # it exited meanwhile
        found[int(entry.name)] = command.strip()[:300]
    return found


def children() -> set[int]:
    return set(_children())
