"""The demo's last part: the governance report, written from the running system.

The report reads the demo's own topics (facts and the alerting service's
audit records) exactly as `spinewatch report --running` does against a
deployment, into a directory that outlives the demo; the demo ends with the
legend of the flags and the report's path.
"""

from __future__ import annotations

import io
from pathlib import Path

from spinewatch.domain.governance.model import LEGEND, CohortRow, Scope
from spinewatch.engine.settings import Settings
from spinewatch.report.main import report_from_topics

DEFAULT_REPORT_DIR = Path("spinewatch-report")


async def write_demo_report(settings: Settings, brokers: str, target: Path) -> str:
    """Write the report; the lines the demo ends with (flagged rows, legend, path)."""
    written = await report_from_topics(settings, brokers, Scope(None, None, ()), target)
    out = io.StringIO()
    report = written.report
    flagged = [row for row in report.rows if row.flags]
    print(
        f"\nGovernance report: {len(report.rows)} cohort rows, {len(flagged)} flagged; "
        f"{len(report.charts)} charts; {len(report.alerts)} alerts (read the topics in "
        f"{written.read_s:.1f} s, rendered in {written.render_s:.1f} s)",
        file=out,
    )
    if flagged:
        print("Flagged rows: observed (95% Wilson interval) against the cited comparator", file=out)
    for row in flagged:
        marks = " ".join(LEGEND[flag][0] for flag in row.flags)
        print(f"  {marks:<9} {_flagged_line(row)}", file=out)
    print("Flags (legend):", file=out)
    for flag, (mark, words) in LEGEND.items():
        print(f"  {mark:<3} {flag.value}: {words}", file=out)
    if written.pdf is not None:
        print(f"PDF: {written.pdf.resolve()}", file=out)
    print(f"Governance report: {written.html.resolve()}", file=out)
    return out.getvalue()


def _flagged_line(row: CohortRow) -> str:
    """One flagged row as a clinician reads it: no catalog id, no seed file name."""
    observed = f"{row.numerator}/{row.denominator}"
    if row.rate is not None and row.low is not None and row.high is not None:
        observed += f" = {row.rate:.1%} ({row.low:.1%}-{row.high:.1%})"
    against = "no comparator"
    if row.comparator is not None:
        against = f"{row.comparator.described}, {row.comparator.label}"
        if not row.comparator.exact_cohort:
            against += f" (approximate: {row.comparator.broader_group or 'a broader group'})"
    elif row.published_range is not None:
        against = f"published range {row.published_range.described}, {row.published_range.label}"
    cohort = f"{row.site_id} / {row.procedure} / {row.indication} / {row.metric}"
    return f"{cohort}: {observed} vs {against}"
