"""`spinewatch replay`: the readers (JSON Lines, JSON, format detection) and the CSV columns.

Unit tests of pure logic. The ledger, the counting rule and the sinks are
in tests/test_replay_resumption.py; a real broker, worker and gateway,
the replay interrupted and resumed, in tests/test_replay_e2e.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from spinewatch.contracts import parse_event
from spinewatch.errors import ReplayError
from spinewatch.replay.csv_format import CSV_COLUMNS, csv_records, parse_levels
from spinewatch.replay.records import Outcome, Status
from spinewatch.replay.run import check
from spinewatch.replay.sources import (
    Format,
    detect_format,
    document_records,
    jsonl_records,
    load_document,
    read_records,
)
from tests.samples import sample_messages

PATIENT = "00000000-0000-0000-0000-000000000001"
PROCEDURE = "00000000-0000-0000-0000-000000000002"


# --- JSON Lines and JSON ------------------------------------------------------------------


def test_jsonl_records_skip_blank_lines_and_keep_line_numbers() -> None:
    good = sample_messages()[0]
    lines = [good + b"\n", b"\n", b"   \r\n", b"{not json\n", good + b"\r\n"]
    records = list(jsonl_records(lines))
    assert [(r.index, r.position) for r in records] == [(0, "line 1"), (1, "line 4"), (2, "line 5")]
    assert records[2].payload == good  # the line's own bytes, line ending stripped


def test_json_document_is_one_event_or_an_array_of_them() -> None:
    messages = [json.loads(m) for m in sample_messages()[:3]]
    items = list(document_records(messages))
    assert [r.position for r in items] == ["item 0", "item 1", "item 2"]
    assert all(not isinstance(check(r), Outcome) for r in items)
    (single,) = document_records(messages[0])
    assert single.position == "document"


def test_nan_in_a_json_document_is_a_field_error_not_a_refused_file(tmp_path: Path) -> None:
    event = sample_messages()[1].replace(b'"vas":1.5', b'"vas":NaN')
    path = tmp_path / "events.json"
    path.write_bytes(b"[" + event + b"]")
    (record,) = read_records(path, Format.JSON)
    outcome = check(record)
    assert isinstance(outcome, Outcome)
    assert [e.location for e in outcome.errors] == ["vas"]


def test_a_broken_json_document_is_refused_with_where_not_what(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_bytes(b'[{"patient": "Jane Doe 1961-03-02",]')
    with pytest.raises(ReplayError) as caught:
        load_document(path.read_bytes(), path)
    assert "line 1, column" in str(caught.value)
    assert "Jane" not in str(caught.value)


def test_formats_are_told_from_the_suffix_or_the_content(tmp_path: Path) -> None:
    def file(name: str, content: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(content)
        return path

    one, two = sample_messages()[:2]
    assert detect_format(file("a.jsonl", b"")) is Format.JSONL
    assert detect_format(file("a.ndjson", b"")) is Format.JSONL
    assert detect_format(file("a.csv", b"event_type\n")) is Format.CSV
    assert detect_format(file("a.json", b"[" + one + b"]")) is Format.JSON
    assert detect_format(file("b.json", one)) is Format.JSON
    assert detect_format(file("c.json", one + b"\n" + two + b"\n")) is Format.JSONL
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": []}
    assert detect_format(file("d.json", json.dumps(bundle).encode())) is Format.FHIR
    assert detect_format(file("export.txt", one + b"\n")) is Format.JSON
    assert detect_format(file("e.json", b"[1]"), Format.CSV) is Format.CSV  # declared wins
    with pytest.raises(ReplayError, match="--format"):
        detect_format(file("f.txt", b"hello"))
    with pytest.raises(ReplayError, match="not one JSON document"):
        detect_format(file("g.json", b'{"a": '))


# --- CSV ----------------------------------------------------------------------------------

PROCEDURE_ROW = {
    "event_type": "procedure.performed",
    "event_id": "00000000-0000-0000-0000-00000000000a",
    "occurred_at": "2026-03-02T09:30:00Z",
    "recorded_at": "2026-03-02T11:30:00+00:00",
    "source": "ris-demo",
    "site_id": "demo-north",
    "patient_ref": PATIENT,
    "procedure_id": PROCEDURE,
    "procedure_type": "pvp",
    "indication": "hemangioma",
    "levels": "L4:unipedicular:5.5:ct:foraminal/symptomatic;L5:bipedicular:4:ct",
    "anesthesia": "local",
    "pre_vas": "7.5",
    "neurological_deficit_at_presentation": "false",
    "biopsy_taken": "TRUE",
    "duration_min": "45",
    "pre_sf36": json.dumps(
        {"scale": "transformed_0_100"}
        | dict.fromkeys(
            (
                "physical_functioning", "role_physical", "bodily_pain", "general_health",
                "vitality", "social_functioning", "role_emotional", "mental_health",
            ),
            50,
        )
    ),
}  # fmt: skip
FOLLOWUP_ROW = {
    "event_type": "followup.recorded",
    "event_id": "00000000-0000-0000-0000-00000000000b",
    "occurred_at": "2026-03-04T09:30:00Z",
    "recorded_at": "2026-03-04T09:30:00Z",
    "source": "ehr-demo",
    "site_id": "demo-north",
    "patient_ref": PATIENT,
    "procedure_id": PROCEDURE,
    "timepoint": "other",
    "days_since_procedure": "2",
    "vas": "1.5",
    "analgesic_use": "less",
}
COMPLICATION_ROW = FOLLOWUP_ROW | {
    "event_type": "complication.reported",
    "event_id": "00000000-0000-0000-0000-00000000000c",
    "timepoint": "",
    "days_since_procedure": "",
    "vas": "",
    "analgesic_use": "",
    "category": "radiculopathy",
    "severity": "mild",
    "relatedness": "definite",
    "days_after_procedure": "0",
    "vertebra": "L4",
}
RETRACTION_ROW = FOLLOWUP_ROW | {
    "event_type": "event.retracted",
    "event_id": "00000000-0000-0000-0000-00000000000d",
    "timepoint": "",
    "days_since_procedure": "",
    "vas": "",
    "analgesic_use": "",
    "target_event_id": "00000000-0000-0000-0000-00000000000b",
    "reason": "entered_in_error",
}


def write_csv(path: Path, rows: Sequence[dict[str, str]]) -> Path:
    import csv  # noqa: PLC0415 - only the CSV tests write one

    columns = list(dict.fromkeys(name for row in rows for name in row))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_csv_rows_become_events_of_each_type(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "export.csv", [PROCEDURE_ROW, FOLLOWUP_ROW, COMPLICATION_ROW, RETRACTION_ROW]
    )
    records = list(csv_records(path))
    assert [r.position for r in records] == ["row 2", "row 3", "row 4", "row 5"]
    events = [parse_event(r.payload or b"") for r in records]
    procedure = events[0].model_dump(mode="json")
    assert procedure["pre_vas"] == 7.5
    assert procedure["biopsy_taken"] is True
    assert procedure["neurological_deficit_at_presentation"] is False
    assert procedure["duration_min"] == 45
    assert procedure["pre_sf36"]["bodily_pain"] == 50
    assert [
        (lv["vertebra"], lv["approach"], lv["cement_volume_ml"]) for lv in procedure["levels"]
    ] == [
        ("L4", "unipedicular", 5.5),
        ("L5", "bipedicular", 4.0),
    ]
    assert procedure["levels"][0]["leakages"] == [
        {"site": "foraminal", "volume_ml": None, "symptomatic": True}
    ]
    assert procedure["levels"][1]["leakages"] == []
    assert [e.event_type for e in events[1:]] == [
        "followup.recorded",
        "complication.reported",
        "event.retracted",
    ]
    followup = events[1].model_dump(mode="json")
    assert (followup["days_since_procedure"], followup["vas"]) == (2, 1.5)


def test_the_documented_columns_are_every_contract_field() -> None:
    from spinewatch.contracts import EVENT_MODELS  # noqa: PLC0415

    fields = {name for model in EVENT_MODELS.values() for name in model.model_fields}
    assert set(CSV_COLUMNS) == fields


def test_bad_cells_are_named_by_field_never_quoted(tmp_path: Path) -> None:
    name = "Jane-Doe-1961"
    rows = [
        PROCEDURE_ROW | {"pre_vas": name, "biopsy_taken": "yes"},
        PROCEDURE_ROW | {"levels": f"L4:unipedicular:5:ct:{name}"},
        PROCEDURE_ROW | {"levels": "L4:a:b:c:d:e:f"},
        PROCEDURE_ROW | {"pre_sf36": "{" + name},
        FOLLOWUP_ROW | {"vas": "1e999"},
    ]
    records = list(csv_records(write_csv(tmp_path / "bad.csv", rows)))
    outcomes = [check(r) for r in records]
    assert all(isinstance(o, Outcome) and o.status is Status.REJECTED for o in outcomes)
    locations = [sorted(e.location for e in o.errors) for o in outcomes if isinstance(o, Outcome)]
    assert locations == [
        ["biopsy_taken", "pre_vas"],
        ["levels.0.leakages.0"],
        ["levels.0"],
        ["pre_sf36"],
        ["vas"],
    ]
    text = json.dumps([[str(e) for e in o.errors] for o in outcomes if isinstance(o, Outcome)])
    assert name not in text


def test_levels_grammar_without_cement_and_as_json() -> None:
    assert parse_levels("T12;L1;") == ([{"vertebra": "T12"}, {"vertebra": "L1"}], [])
    levels, errors = parse_levels('[{"vertebra": "L2"}]')
    assert (levels, errors) == ([{"vertebra": "L2"}], [])
    levels, errors = parse_levels("L1:::ct:paravertebral/asymptomatic/0.4+epidural/symptomatic")
    assert not errors
    assert levels == [
        {
            "vertebra": "L1",
            "leakage_imaging": "ct",
            "leakages": [
                {"site": "paravertebral", "symptomatic": False, "volume_ml": 0.4},
                {"site": "epidural", "symptomatic": True},
            ],
        }
    ]


def test_a_header_with_an_undocumented_column_refuses_the_file(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("event_type,Jane Doe 1961\nprocedure.performed,1\n")
    with pytest.raises(ReplayError) as caught:
        list(csv_records(path))
    assert "header column 2" in str(caught.value)
    assert "Jane" not in str(caught.value)
    path.write_text("event_id,vas\n")
    with pytest.raises(ReplayError, match="no event_type column"):
        list(csv_records(path))
    path.write_text("event_type,vas,vas\n")
    with pytest.raises(ReplayError, match="repeats column 2"):
        list(csv_records(path))


def test_a_short_row_and_blank_rows(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("event_type,vas\n\nfollowup.recorded\n,\nfollowup.recorded,1\n")
    records = list(csv_records(path))
    assert [(r.index, r.position) for r in records] == [(0, "row 3"), (1, "row 5")]
    assert [e.code for e in records[0].errors] == ["csv_cell_count"]
    assert records[0].payload is None


def test_a_csv_that_is_not_utf8_is_refused_naming_the_row(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(b"event_type,vas\nfollowup.recorded,1\nfollowup.recorded,\xff\n")
    with pytest.raises(ReplayError, match="not UTF-8"):
        list(csv_records(path))
