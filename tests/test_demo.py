"""`spinewatch demo` end to end: embedded broker, one worker, the bundled cohort."""

from __future__ import annotations

import io
import re

import pytest

from spinewatch.demo import run_demo

pytestmark = pytest.mark.e2e


def test_demo_streams_the_cohort_and_prints_observed_against_baseline() -> None:
    out = io.StringIO()
    assert run_demo(out) == 0
    text = out.getvalue()
    assert "embedded Tansu broker" in text
    counts = re.search(r"applied (\d+) events, ignored (\d+) duplicates, dead-lettered (\d+)", text)
    streamed = re.search(
        r"(\d+) distinct events, (\d+) redelivered duplicates, (\d+) malformed", text
    )
    assert counts is not None
    assert streamed is not None
    # Every distinct event applied once, every redelivery ignored, the
    # malformed message dead-lettered (the late and early follow-ups are
    # distinct events, so they are among the applied).
    assert counts.groups() == streamed.groups()
    assert re.search(r"/metrics served \d{3,} series", text)
    # Seed 000's leakage baseline is shown next to a PVP/hemangioma cohort.
    assert "vs 3/28 (10.7%) (s000.leakage.per_level)" in text
    assert "broker and worker stopped" in text
