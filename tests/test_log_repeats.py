"""Repeated third-party warnings are limited per call site; nothing else is.

The clock is a fake (pure logic); the last test goes through the real
handler that `configure_logging` installs for the worker and the alerting
service.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from spinewatch.runtime.log_privacy import PrivacyFilter, configure_logging
from spinewatch.runtime.log_repeats import RepeatLimit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(
    name: str, level: int, lineno: int, msg: str = "Unable connect to node %s"
) -> logging.LogRecord:
    return logging.LogRecord(name, level, "/x/aiokafka/client.py", lineno, msg, (111,), None)


def test_a_call_site_logs_once_per_period_then_says_how_many_were_withheld() -> None:
    clock = FakeClock()
    limit = RepeatLimit(period_s=10, clock=clock)
    passed = [limit.filter(record("aiokafka", logging.WARNING, 435)) for _ in range(500)]
    assert passed.count(True) == 1
    assert passed[0]

    clock.now += 10
    after = record("aiokafka", logging.WARNING, 435)
    assert limit.filter(after)
    assert after.getMessage() == (
        "Unable connect to node 111 [499 more like this withheld since the last]"
    )
    # The count restarts with each line that passes.
    clock.now += 10
    again = record("aiokafka", logging.WARNING, 435)
    assert limit.filter(again)
    assert again.getMessage() == "Unable connect to node 111"


def test_sites_are_limited_apart_and_by_logger_family() -> None:
    limit = RepeatLimit(period_s=10, clock=FakeClock())
    first = [
        limit.filter(record(name, logging.ERROR, line))
        for name, line in [
            ("aiokafka.consumer.group_coordinator", 566),
            ("aiokafka.consumer.fetcher", 749),
            ("faust.transport", 12),
            ("mode.timers", 154),
            ("redis.connection", 7),
        ]
    ]
    assert first == [True] * 5
    assert not limit.filter(record("aiokafka.consumer.fetcher", logging.ERROR, 749))


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("spinewatch.runtime.supervisor", logging.ERROR),  # our own: one line per failure already
        ("aiokafkaish", logging.WARNING),  # not a child of aiokafka
        ("aiokafka", logging.INFO),
        ("faust.topics", logging.DEBUG),  # asked for at debug: kept whole
    ],
)
def test_everything_else_passes_untouched(name: str, level: int) -> None:
    limit = RepeatLimit(period_s=10, clock=FakeClock())
    records = [record(name, level, 1) for _ in range(50)]
    assert all(limit.filter(r) for r in records)
    assert {r.getMessage() for r in records} == {"Unable connect to node 111"}


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level, before = root.level, list(root.handlers)
    stream = io.StringIO()
    configure_logging("debug", stream)
    yield stream
    root.handlers[:] = before
    root.setLevel(level)
    for other in before:
        for installed in [f for f in other.filters if isinstance(f, PrivacyFilter)]:
            other.removeFilter(installed)


def test_the_services_handler_limits_an_outage_burst(log_text: io.StringIO) -> None:
    noisy = logging.getLogger("aiokafka.client")
    ours = logging.getLogger("spinewatch.alerting.process")
    for _ in range(1000):
        noisy.warning("Unable connect to node with id %s", 111)
    for n in range(20):
        ours.error("loop consume failed (ConnectionError); restart %d in 0.2 s", n)
    for _ in range(30):
        noisy.debug("Sending request %s", "MetadataRequest")

    lines = log_text.getvalue().splitlines()
    assert len([line for line in lines if "Unable connect to node" in line]) == 1
    assert len([line for line in lines if "loop consume failed" in line]) == 20
    assert len([line for line in lines if "Sending request" in line]) == 30
