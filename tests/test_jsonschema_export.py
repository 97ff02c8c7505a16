"""The committed JSON Schemas match the models and agree with them on data."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from jsonschema import Draft202012Validator

from spinewatch.cli.main import main
from spinewatch.contracts import EVENT_MODELS
from spinewatch.contracts.export import DRIFT_MODELS, event_json_schemas, render, schema_file_name
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
    generated = event_json_schemas()
    committed = {path.name for path in COMMITTED.glob("*.json")}
    assert committed == set(generated), "run: spinewatch schemas --out schemas/json-schema"
    for name, document in generated.items():
        assert (COMMITTED / name).read_text() == render(document), f"{name} is stale"


def test_cli_writes_one_schema_per_event_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schemas", "--out", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    types = [*EVENT_MODELS, *DRIFT_MODELS]
    assert written == sorted(schema_file_name(t) for t in types)
    for name in written:
        Draft202012Validator.check_schema(json.loads((tmp_path / "out" / name).read_text()))
    assert len(capsys.readouterr().out.splitlines()) == len(types)


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
