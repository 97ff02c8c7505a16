"""Writing the report: a source into the in-process engine, the model, the page, the PDF."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from spinewatch.domain.governance.model import GovernanceReport, Scope
from spinewatch.engine.settings import Settings
from spinewatch.report.build import build_report
from spinewatch.report.page import render
from spinewatch.report.pdf import PdfUnavailable, find_chromium, print_pdf
from spinewatch.report.sources import Loaded, from_files, from_topics

HTML_NAME, PDF_NAME = "report.html", "report.pdf"


@dataclass(frozen=True)
class Written:
    html: Path
    pdf: Path | None
    report: GovernanceReport
    read_s: float  # reading the source into the engine
    render_s: float  # model, figures and page
    pdf_s: float | None


def write_report(
    loaded: Loaded, settings: Settings, scope: Scope, out: Path, *, pdf: bool | None = None
) -> Written:
    """report.html in `out` (and report.pdf: always with pdf=True, which fails without
    Chromium; when Chromium is found with pdf=None; never with pdf=False)."""
    started = time.monotonic()
    report = build_report(
        loaded.engine, settings, scope, audit=loaded.audit, source=loaded.description
    )
    out.mkdir(parents=True, exist_ok=True)
    html = out / HTML_NAME
    html.write_text(render(report), encoding="utf-8")
    render_s = time.monotonic() - started
    pdf_path, pdf_s = None, None
    chromium = find_chromium()
    if pdf is True and chromium is None:
        raise PdfUnavailable(
            "--pdf needs Chromium to print the PDF (install the Debian package `chromium`)"
        )
    if pdf is not False and chromium is not None:
        began = time.monotonic()
        pdf_path = print_pdf(html, out / PDF_NAME, chromium)
        pdf_s = time.monotonic() - began
    return Written(html, pdf_path, report, loaded.seconds, render_s, pdf_s)


def report_from_files(
    paths: list[Path], settings: Settings, scope: Scope, out: Path, *, pdf: bool | None = None
) -> Written:
    return write_report(from_files(paths, settings), settings, scope, out, pdf=pdf)


async def report_from_topics(
    settings: Settings, brokers: str, scope: Scope, out: Path, *, pdf: bool | None = None
) -> Written:
    loaded = await from_topics(settings, brokers)
    # Folding, calibrating and drawing are CPU work: off the event loop.
    return await asyncio.to_thread(write_report, loaded, settings, scope, out, pdf=pdf)
