"""The report's PDF: headless Chromium prints the HTML page as a reader's browser would.

No second layout engine: the PDF is the page (print CSS included), so the
two cannot disagree. Chromium is the Debian `chromium` package (`./dev`
installs it); without it the HTML is still written and `--pdf` fails
clearly.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from spinewatch.errors import SpinewatchError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PRINT_TIMEOUT_S = 90.0


class PdfUnavailable(SpinewatchError):
    """No Chromium to print with, or it failed: the message says which."""


def find_chromium() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def print_pdf(html: Path, pdf: Path, chromium: str | None = None) -> Path:
    """`html` printed to `pdf` by headless Chromium; raises PdfUnavailable."""
    binary = chromium or find_chromium()
    if binary is None:
        raise PdfUnavailable(
            "no Chromium found to print the PDF (install the Debian package `chromium`)"
        )
    with tempfile.TemporaryDirectory(prefix="spinewatch-chromium-") as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-pdf-header-footer",
            f"--user-data-dir={profile}",
            f"--print-to-pdf={pdf}",
            html.resolve().as_uri(),
        ]
        try:
            done = subprocess.run(  # noqa: S603 - a fixed binary and our own paths
                command, capture_output=True, timeout=PRINT_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise PdfUnavailable(f"Chromium did not print within {PRINT_TIMEOUT_S:g} s") from None
    if done.returncode != 0 or not pdf.is_file() or pdf.stat().st_size == 0:
        raise PdfUnavailable(f"Chromium failed to print the PDF (exit {done.returncode})")
    return pdf
