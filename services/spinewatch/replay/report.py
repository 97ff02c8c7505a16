"""What a person sees: a progress bar while the replay runs, a summary table at the end.

The bar (rich) is drawn on standard error, only when it is a terminal and
`--quiet` was not given, so a replay run by a scheduler or piped into a
file writes no control characters. The summary goes to standard output:
a table, or one JSON object with `--json`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from spinewatch.replay.records import Counts

# Shown only when some record had that outcome; the first three always.
_ALWAYS = ("accepted", "duplicate", "rejected")
_SOMETIMES = ("conflict", "forbidden")


class ProgressBar:
    """A bar per input file; a no-op when disabled."""

    def __init__(self, enabled: bool, stream: TextIO) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("records"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream),
            disable=not enabled,
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.enabled:
            self._progress.stop()

    def start_file(self, name: str, total: int, done: int) -> None:
        self._task = self._progress.add_task(name, total=total, completed=done)

    def advance(self, count: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, count)


def totals(rows: Sequence[tuple[str, Counts]]) -> Counts:
    total = Counts()
    for _, counts in rows:
        total.merge(counts)
    return total


def summary_json(rows: Sequence[tuple[str, Counts]], note: str | None = None) -> str:
    body: dict[str, object] = {
        "files": [{"file": name, **counts.as_json()} for name, counts in rows],
        "total": totals(rows).as_json(),
    }
    if note:
        body["note"] = note
    return json.dumps(body)


def print_summary(
    rows: Sequence[tuple[str, Counts]], stream: TextIO, note: str | None = None
) -> None:
    total = totals(rows)
    columns = list(_ALWAYS) + [name for name in _SOMETIMES if getattr(total, name)]
    table = Table(title="spinewatch replay", title_justify="left")
    table.add_column("file")
    for name in columns:
        table.add_column(name, justify="right")
    for name, counts in rows:
        table.add_row(name, *(f"{getattr(counts, column):,}" for column in columns))
    if len(rows) > 1:
        table.add_row("total", *(f"{getattr(total, column):,}" for column in columns))
    console = Console(file=stream, highlight=False)
    console.print(table)
    if total.resent:
        console.print(
            f"{total.resent:,} records sent by an interrupted run were sent again; "
            "each is counted once (a 'duplicate' answer to such a record counts as accepted)."
        )
    if note:
        console.print(note)
