"""The committed JSON Schemas match the models and agree with them on data.

The event schemas are checked on generated events; the baseline catalog's
schema on the real catalog.toml, read with tomllib as a non-Python tool
would read it (`parse_catalog` validates that document untransformed).
"""

from __future__ import annotations

import copy
import json
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from spinewatch.baselines import parse_catalog
from spinewatch.baselines.catalog import CATALOG_RESOURCE
from spinewatch.baselines.export import CATALOG_SCHEMA_FILE, json_schemas
from spinewatch.baselines.model import BaselineCatalog
from spinewatch.cli.main import main
from spinewatch.contracts import EVENT_MODELS
from spinewatch.contracts.drift import DriftSentinel
from spinewatch.contracts.export import CHANNEL_MODELS, DRIFT_MODELS, render, schema_file_name
from tests.strategies import any_event, procedure_performed

COMMITTED = Path(__file__).resolve().parents[1] / "schemas" / "json-schema"
VALIDATORS = {
    event_type: Draft202012Validator(
        json.loads((COMMITTED / schema_file_name(event_type)).read_text()),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    for event_type in EVENT_MODELS
}


def test_committed_schemas_are_up_to_date() -> None:
    generated = json_schemas()
    committed = {path.name for path in COMMITTED.glob("*.json")}
    assert committed == set(generated), "run: spinewatch schemas --out schemas/json-schema"
    for name, document in generated.items():
        assert (COMMITTED / name).read_text() == render(document), f"{name} is stale"


def test_cli_writes_one_schema_per_event_type_and_the_catalog_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schemas", "--out", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    types = [*EVENT_MODELS, *DRIFT_MODELS, *CHANNEL_MODELS]
    assert written == sorted([*(schema_file_name(t) for t in types), CATALOG_SCHEMA_FILE])
    for name in written:
        Draft202012Validator.check_schema(json.loads((tmp_path / "out" / name).read_text()))
    assert len(capsys.readouterr().out.splitlines()) == len(types) + 1


@settings(max_examples=150)
@given(payload=any_event)
def test_events_valid_for_the_models_are_valid_for_the_json_schema(payload: dict[str, Any]) -> None:
    errors = list(VALIDATORS[payload["event_type"]].iter_errors(payload))
    assert errors == []


@given(payload=procedure_performed())
def test_json_schema_rejects_what_the_models_reject(payload: dict[str, Any]) -> None:
    validator = VALIDATORS["procedure.performed"]
    corruptions: list[dict[str, Any]] = [
        {"pre_vas": 12},
        {"patient_name": "x"},
        {"site_id": "North Site"},
        {"levels": []},
        {"schema_version": 2},
    ]
    for corrupt in corruptions:
        assert not validator.is_valid(copy.deepcopy(payload) | corrupt), corrupt
    bad_level = copy.deepcopy(payload)
    bad_level["levels"][0]["vertebra"] = "T13"
    assert not validator.is_valid(bad_level)


CATALOG_TEXT = files("spinewatch.baselines").joinpath(CATALOG_RESOURCE).read_text(encoding="utf-8")
CATALOG_VALIDATOR = Draft202012Validator(
    json.loads((COMMITTED / CATALOG_SCHEMA_FILE).read_text()),
    format_checker=Draft202012Validator.FORMAT_CHECKER,
)


def test_the_real_catalog_is_valid_for_the_catalog_schema() -> None:
    document = tomllib.loads(CATALOG_TEXT)
    assert [error.message for error in CATALOG_VALIDATOR.iter_errors(document)] == []
    assert len(document["baselines"]) == len(parse_catalog(CATALOG_TEXT).baselines)


def _loader_accepts(document: dict[str, Any]) -> bool:
    """What `parse_catalog` does with the document tomllib returned."""
    try:
        BaselineCatalog.model_validate(document, strict=False)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(
    "path",
    [
        ("baselines", 0, "statistic", "sd"),  # a mean_sd figure without its SD
        ("baselines", 0, "source", "quote"),
        ("baselines", 0, "metric"),
        ("seeds", 0, "kind"),
        ("catalog_version",),
    ],
)
def test_catalog_schema_rejects_a_missing_required_field(path: tuple[str | int, ...]) -> None:
    document = tomllib.loads(CATALOG_TEXT)
    assert document["baselines"][0]["statistic"]["kind"] == "mean_sd"
    broken = copy.deepcopy(document)
    node: Any = broken
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    assert not CATALOG_VALIDATOR.is_valid(broken), path
    assert not _loader_accepts(broken), path  # the model agrees


def test_catalog_schema_rejects_unknown_keys_and_values() -> None:
    document = tomllib.loads(CATALOG_TEXT)
    for corrupt in (
        {"patient_name": "x"},
        {"figure": "anecdote"},
        {"statistic": {"kind": "share", "value": 1.5}},
        {"source": document["baselines"][0]["source"] | {"seed": "000.txt"}},
    ):
        broken = copy.deepcopy(document)
        broken["baselines"][0] |= corrupt
        assert not CATALOG_VALIDATOR.is_valid(broken), corrupt
        assert not _loader_accepts(broken), corrupt


SENTINEL_VALIDATOR = Draft202012Validator(
    json.loads((COMMITTED / schema_file_name("drift.sentinel")).read_text()),
    format_checker=Draft202012Validator.FORMAT_CHECKER,
)


@pytest.mark.parametrize(
    ("day", "in_range"),
    [("1984-01-01", True), ("2099-12-31", True), ("1983-12-31", False), ("2100-01-01", False)],
)
def test_drift_dates_take_the_clinical_range_in_the_schema_as_in_the_model(
    day: str, in_range: bool
) -> None:
    # A date has no offset, so its pattern states the range exactly.
    message = {
        "event_type": "drift.sentinel",
        "schema_version": 1,
        "sentinel_id": "6f1c1f64-2b1e-5d0a-9f5e-0c7a3b2d1e4f",
        "site_id": "north",
        "metric": "death_rate",
        "procedure_type": "pvp",
        "indication": "osteoporotic",
        "occurred_on": day,
    }
    assert SENTINEL_VALIDATOR.is_valid(message) is in_range
    try:
        DriftSentinel.model_validate_json(json.dumps(message))
    except ValidationError:
        assert not in_range
    else:
        assert in_range
