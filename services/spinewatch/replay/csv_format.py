"""The replay's flat CSV: one event per row, columns named after contract fields.

A registry export is usually a table, so the common case is a flat CSV
rather than JSON. `CSV_COLUMNS` below is the documentation (printed by
`spinewatch replay --help` and quoted in the README); each cell becomes the
field of the same name, typed by its column, and the event is then checked
against its contract like any other, so a bad cell is reported by field
name (`pre_vas: Input should be a valid number`), never by its value.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any, Final

from spinewatch.errors import FieldError, ReplayError
from spinewatch.replay.records import Record


class Kind(Enum):
    TEXT = "text"
    INT = "integer"
    FLOAT = "number"
    BOOL = "true/false"
    JSON = "JSON object"
    LEVELS = "levels"


_ENVELOPE: Final = {
    "event_id": Kind.TEXT,
    "event_type": Kind.TEXT,
    "schema_version": Kind.INT,
    "occurred_at": Kind.TEXT,
    "recorded_at": Kind.TEXT,
    "source": Kind.TEXT,
    "site_id": Kind.TEXT,
    "patient_ref": Kind.TEXT,
    "procedure_id": Kind.TEXT,
}
_BY_EVENT_TYPE: Final = {
    "procedure.performed": {
        "procedure_type": Kind.TEXT,
        "indication": Kind.TEXT,
        "levels": Kind.LEVELS,
        "anesthesia": Kind.TEXT,
        "pre_vas": Kind.FLOAT,
        "pre_sf36": Kind.JSON,
        "neurological_deficit_at_presentation": Kind.BOOL,
        "posterior_wall_intact": Kind.BOOL,
        "biopsy_taken": Kind.BOOL,
        "histology": Kind.TEXT,
        "operator_ref": Kind.TEXT,
        "duration_min": Kind.INT,
        "blood_loss_ml": Kind.FLOAT,
    },
    "followup.recorded": {
        "timepoint": Kind.TEXT,
        "days_since_procedure": Kind.INT,
        "vas": Kind.FLOAT,
        "sf36": Kind.JSON,
        "analgesic_use": Kind.TEXT,
        "neurological_status": Kind.TEXT,  # schema_version 2
        "pain_relief": Kind.TEXT,  # schema_version 2
    },
    "complication.reported": {
        "category": Kind.TEXT,
        "severity": Kind.TEXT,
        "relatedness": Kind.TEXT,
        "days_after_procedure": Kind.INT,
        "vertebra": Kind.TEXT,
    },
    "event.retracted": {"target_event_id": Kind.TEXT, "reason": Kind.TEXT},
}
CSV_COLUMNS: Final[dict[str, Kind]] = _ENVELOPE | {
    name: kind for columns in _BY_EVENT_TYPE.values() for name, kind in columns.items()
}

CSV_HELP: Final = """\
CSV columns (header row required; any order; a column may be left out, an
empty cell is an absent field; row N counts the header as row 1):
  every row     event_type (selects the event), event_id, occurred_at,
                recorded_at (ISO 8601 with timezone), source, site_id,
                patient_ref, procedure_id; schema_version (default 1)
  procedure.performed
                procedure_type, indication, levels, anesthesia, pre_vas,
                neurological_deficit_at_presentation, biopsy_taken,
                posterior_wall_intact, histology, operator_ref,
                duration_min, blood_loss_ml, pre_sf36 (a JSON object)
  followup.recorded
                timepoint, days_since_procedure, vas, analgesic_use,
                sf36 (a JSON object); with schema_version 2:
                neurological_status, pain_relief
  complication.reported
                category, severity, relatedness, days_after_procedure, vertebra
  event.retracted
                target_event_id, reason
  true/false cells: true or false. levels: treated levels separated by ';',
  each vertebra[:approach:cement_ml:imaging[:leakages]], leakages separated
  by '+', each site/symptomatic or site/asymptomatic, optionally /volume_ml:
      L1:bipedicular:4.5:ct;L2:unipedicular:3:ct:paravertebral/asymptomatic
  (a level without cement, e.g. radiotherapy: just L1), or a JSON array
  of level objects."""

_INT = re.compile(r"[+-]?\d{1,18}")
_FLOAT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?")
_LEVEL_PARTS = ("vertebra", "approach", "cement_volume_ml", "leakage_imaging")
_LEVELS_MESSAGE = "expected vertebra[:approach:cement_ml:imaging[:leakages]] (see --help)"
_LEAKAGE_MESSAGE = "expected site/symptomatic or site/asymptomatic, optionally /volume_ml"


def csv_records(path: Path) -> Iterator[Record]:
    """One record per non-blank row after the header."""
    number = 1
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = csv.reader(handle, strict=True)
            header = check_header(next(rows, []), path)
            index = 0
            for number, row in enumerate(rows, start=2):
                if not any(cell.strip() for cell in row):
                    continue
                event, errors = row_event(header, row)
                payload = None if errors else json.dumps(event, separators=(",", ":")).encode()
                yield Record(index, f"row {number}", payload, errors)
                index += 1
    except UnicodeDecodeError:
        raise ReplayError(f"{path}: not UTF-8 (near row {number + 1})") from None
    except csv.Error as exc:
        # The csv module's messages describe the defect, never the cell.
        raise ReplayError(f"{path}: row {number + 1}: {exc}") from None


def check_header(header: list[str], path: Path) -> list[str]:
    names = [name.strip() for name in header]
    for position, name in enumerate(names, start=1):
        if name not in CSV_COLUMNS:
            # By position: a header cell is input too, and could be anything.
            raise ReplayError(
                f"{path}: header column {position} is not a documented column "
                "(spinewatch replay --help lists them)"
            )
        if names.index(name) != position - 1:
            raise ReplayError(
                f"{path}: header column {position} repeats column {names.index(name) + 1}"
            )
    if "event_type" not in names:
        raise ReplayError(f"{path}: the header has no event_type column")
    return names


def row_event(header: list[str], row: list[str]) -> tuple[dict[str, Any], tuple[FieldError, ...]]:
    """The event a row stands for, or the reasons it cannot be built."""
    if len(row) != len(header):
        error = FieldError(
            "<row>", "csv_cell_count", f"the row has {len(row)} cells, the header {len(header)}"
        )
        return {}, (error,)
    event: dict[str, Any] = {"schema_version": 1}
    errors: list[FieldError] = []
    for name, raw in zip(header, row, strict=True):
        cell = raw.strip()
        if not cell:
            continue
        kind = CSV_COLUMNS[name]
        if kind is Kind.LEVELS:
            event[name], problems = parse_levels(cell)
            errors += problems
        elif kind is Kind.JSON:
            try:
                event[name] = json.loads(cell, parse_constant=str)
            except (ValueError, RecursionError):
                errors.append(FieldError(name, "json_invalid", "not a valid JSON value"))
        else:
            event[name] = typed(cell, kind)
    return event, tuple(errors)


def typed(cell: str, kind: Kind) -> Any:
    """A cell as its column's type; left as text when it is not one, for the contract to name."""
    if kind is Kind.INT and _INT.fullmatch(cell):
        return int(cell)
    if kind is Kind.FLOAT and _FLOAT.fullmatch(cell) and math.isfinite(float(cell)):
        return float(cell)
    if kind is Kind.BOOL and cell.lower() in ("true", "false"):
        return cell.lower() == "true"
    return cell


def parse_levels(cell: str) -> tuple[Any, list[FieldError]]:
    if cell.startswith("["):
        try:
            return json.loads(cell, parse_constant=str), []
        except (ValueError, RecursionError):
            return cell, [FieldError("levels", "json_invalid", "not a valid JSON array")]
    levels: list[dict[str, Any]] = []
    errors: list[FieldError] = []
    items = cell.split(";")
    if items and not items[-1].strip():
        items.pop()  # a trailing ';'
    for i, item in enumerate(items):
        parts = [part.strip() for part in item.split(":")]
        if len(parts) > len(_LEVEL_PARTS) + 1 or not parts[0]:
            errors.append(FieldError(f"levels.{i}", "csv_levels_format", _LEVELS_MESSAGE))
            continue
        level: dict[str, Any] = {}
        for name, part in zip(_LEVEL_PARTS, parts, strict=False):
            if part:
                level[name] = typed(part, Kind.FLOAT if name == "cement_volume_ml" else Kind.TEXT)
        if len(parts) > len(_LEVEL_PARTS) and parts[-1]:
            level["leakages"], problems = _leakages(parts[-1], i)
            errors += problems
        levels.append(level)
    return levels, errors


def _leakages(text: str, level: int) -> tuple[list[dict[str, Any]], list[FieldError]]:
    leakages: list[dict[str, Any]] = []
    errors: list[FieldError] = []
    for j, item in enumerate(text.split("+")):
        parts = [part.strip() for part in item.split("/")]
        if len(parts) not in (2, 3) or parts[1] not in ("symptomatic", "asymptomatic"):
            errors.append(
                FieldError(f"levels.{level}.leakages.{j}", "csv_levels_format", _LEAKAGE_MESSAGE)
            )
            continue
        leakage: dict[str, Any] = {"site": parts[0], "symptomatic": parts[1] == "symptomatic"}
        if len(parts) == 3 and parts[2]:
            leakage["volume_ml"] = typed(parts[2], Kind.FLOAT)
        leakages.append(leakage)
    return leakages, errors
