"""`spinewatch demo` end to end: embedded broker, one worker, the bundled cohort."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from spinewatch.demo.main import run_demo
from spinewatch.domain.governance.model import LEGEND

# The whole product on 3,000 procedures, then the report: 35-50 s alone, and it
# passed 120 s once beside a broker-outage test in the other process.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_demo_streams_the_cohort_and_prints_observed_against_baseline(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_demo(out, report_dir=tmp_path / "report") == 0
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
    # No catalog id, no hash-named seed file, no unexplained mark: a
    # comparator is cited by author or series, year and seed.
    assert not re.search(r"\bs00\d\.|\d{3}_[0-9a-f]{16}\.txt| ~ ", text)
    # The drifting site's leakage chart signals, after the change began,
    # with the estimated change point; the stable sites are accounted for.
    # At a 60-month budget the busy drifting site may also raise a false alarm
    # before its drift (which of its signals are announced depends on when its
    # design arrives during the backfill), so: every signal is a real crossing,
    # and one of them comes after the change began.
    truth = re.search(r"leakage odds doubled from its procedures of (\S+)\)", text)
    signals = re.findall(
        r"SIGNAL riverside / cement_leakage_rate_per_level: at case \d+ \((\S+)\), "
        r"CUSUM ([\d.]+) >= h ([\d.]+)\n\s+change point estimated at case \d+ \((\S+)\)",
        text,
    )
    assert truth is not None
    assert signals, text[-1500:]
    for signalled, statistic, limit, change_point in signals:
        assert change_point <= signalled
        assert float(statistic) >= float(limit)
    assert any(signalled >= truth.group(1) for signalled, *_ in signals), signals
    # At 60 months per chart at each site's volume, a stable site may raise
    # a false alarm in the demo's year: the line says so, against the budget.
    assert re.search(r"stable sites( \(.*stayed in control|: false alarms on .* a year at)", text)
    # On-call staff: the drifting site's alert fired, then resolved (a
    # second episode, or one announced after a redesign, fires again).
    drift_alert = "[warning] riverside: cement_leakage_rate_per_level drifted (worse)"
    fired = text.count(f"[FIRING] {drift_alert}")
    assert fired >= 1
    assert text.count(f"[RESOLVED] {drift_alert}") == fired
    assert text.index(f"[FIRING] {drift_alert}") < text.index(f"[RESOLVED] {drift_alert}")
    assert "[FIRING] [critical]" in text  # sentinel events page on their own
    assert "broker and worker stopped" in text
    # Two people walked the drifting site's alert through the workflow over
    # the authenticated API, reading its look-back list on the way.
    walk = text[text.index("Investigation of riverside.cement_leakage_rate_per_level.worse") :]
    assert "ack: acknowledged (by demo-oncall)" in walk
    assert "investigate: investigating (by demo-quality-lead)" in walk
    looked = re.search(r"look-back: (\d+) cases since the chart's last restart", walk)
    assert looked is not None, walk[:600]
    assert int(looked.group(1)) >= 1
    assert "close: closed (by demo-quality-lead)" in walk
    # Last: the governance report from the topics, its flags' legend and its path.
    lines = text.rstrip("\n").splitlines()
    path = re.fullmatch(r"Governance report: (\S+report\.html)", lines[-1])
    assert path is not None, lines[-3:]
    report = Path(path.group(1))
    assert report.parent == (tmp_path / "report").resolve()
    html = report.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert html.rstrip().endswith("</html>")
    assert 'class="funnel"' in html
    assert 'class="chart"' in html
    assert "riverside" in html
    assert "Alert history" in html
    # The report's alert history holds the closed investigation, from the audit topic.
    (row,) = [
        r for r in html.split("<tr>") if "riverside</td><td>cement_leakage_rate_per_level" in r
    ]
    assert "<td>closed</td>" in row
    assert "process issue found, with an action taken" in row
    assert "acknowledged (demo-oncall)" in row
    legend = text[text.index("Flags (legend):") :]
    for flag, (mark, _) in LEGEND.items():
        assert f"  {mark}" in legend
        assert flag.value in legend
    # The drifting site's leakage row is flagged above the funnel, against
    # seed 000's 3/28, cited as a reader would.
    assert re.search(
        r"▲2 .*riverside / pvp / hemangioma / cement_leakage_rate_per_level: \d+/\d+ = "
        r"[\d.]+% \([\d.]+%-[\d.]+%\) vs 3/28 \(10\.7%\), .*seed 000",
        text,
    )
