"""`spinewatch report`: the governance report, from replayed files or the running system."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import date
from pathlib import Path
from typing import Any, TextIO

_DESCRIPTION = """\
Write a self-contained HTML governance report (report.html, and report.pdf when
Chromium is installed) for a period and a set of sites: per site and cohort each
monitored metric against its cited comparator with its flags, funnel plots, each
site's CUSUM and VLAD charts, follow-up completeness and the alert history.

The state comes from the worker's own code run in this process, fed either the
event files given (as `spinewatch replay` reads them: JSON Lines, JSON, CSV) or,
with --running, the deployment's facts and audit topics read from the start
(SPINEWATCH_* settings as the worker's: brokers, app id, signing key, Kafka
security). Nothing is written to the topics."""

_EPILOG = "exit codes: 0 written; 1 the source could not be read; 2 usage error."


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "report",
        help="write the governance report (HTML, PDF) from files or the running system",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="event files to report on")
    parser.add_argument(
        "--running", action="store_true", help="read the running system's topics instead"
    )
    parser.add_argument("--out", default="spinewatch-report", help="directory to write into")
    parser.add_argument("--from", dest="start", help="first procedure date, YYYY-MM-DD")
    parser.add_argument("--to", dest="end", help="last procedure date, YYYY-MM-DD")
    parser.add_argument("--site", action="append", default=[], help="a site to include (repeat)")
    pdf = parser.add_mutually_exclusive_group()
    pdf.add_argument("--pdf", action="store_true", help="require the PDF (fails without Chromium)")
    pdf.add_argument("--no-pdf", action="store_true", help="write the HTML only")
    parser.set_defaults(run=run)


class UsageError(ValueError):
    """A bad argument: the message names the option, never its value."""


def _date(option: str, text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option}: not a date (YYYY-MM-DD)") from None


def scope_of(args: argparse.Namespace) -> Any:
    from spinewatch.domain.governance.model import Scope  # noqa: PLC0415

    start, end = _date("--from", args.start), _date("--to", args.end)
    if start and end and start > end:
        raise UsageError("--from: after --to")
    for site in args.site:
        if not site or len(site) > 64 or not site.isprintable():
            raise UsageError("--site: not a site id")
    if bool(args.files) == bool(args.running):
        raise UsageError("FILE: give event files, or --running (not both)")
    return Scope(start, end, tuple(dict.fromkeys(args.site)))


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        scope = scope_of(args)
    except UsageError as exc:
        print(f"spinewatch report: {exc}", file=err)
        return 2
    # Imported here: the report loads the engine, SciPy and matplotlib.
    from pydantic import ValidationError  # noqa: PLC0415

    from spinewatch.engine.settings import Settings  # noqa: PLC0415
    from spinewatch.errors import SpinewatchError  # noqa: PLC0415
    from spinewatch.report.main import report_from_files, report_from_topics  # noqa: PLC0415

    try:
        settings = Settings()
    except ValidationError as exc:
        fields = ", ".join(str(e["loc"][0]) for e in exc.errors() if e.get("loc"))
        print(f"spinewatch report: settings invalid: {fields}", file=err)
        return 2
    pdf = True if args.pdf else False if args.no_pdf else None
    target = Path(args.out)
    try:
        if args.running:
            if settings.kafka_brokers is None:
                print("spinewatch report: --running needs SPINEWATCH_KAFKA_BROKERS", file=err)
                return 2
            written = asyncio.run(
                report_from_topics(settings, settings.kafka_brokers, scope, target, pdf=pdf)
            )
        else:
            written = report_from_files([Path(f) for f in args.files], settings, scope, target,
                                        pdf=pdf)  # fmt: skip
    except SpinewatchError as exc:
        print(f"spinewatch report: {exc}", file=err)
        return 1
    print(written.html, file=out)
    if written.pdf is not None:
        print(written.pdf, file=out)
    return 0
