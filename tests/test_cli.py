"""`spinewatch validate` and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spinewatch.cli.main import main
from spinewatch.devservers.tansu import free_port
from tests.samples import sample_messages
from tests.support import scaled


def test_validate_reports_each_bad_line_with_its_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = sample_messages()
    good, bad = messages[0], messages[-1]
    ndjson = tmp_path / "events.ndjson"
    ndjson.write_bytes(b"\n".join([good, b"", bad, b"{not json", good]) + b"\n")

    assert main(["validate", str(ndjson)]) == 1
    captured = capsys.readouterr()
    reports = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["line"] for r in reports] == [3, 4]
    assert {e["field"] for e in reports[0]["errors"]} == {"vas", "timepoint"}
    assert reports[1]["errors"][0]["code"] == "json_invalid"
    assert "2 valid, 2 invalid" in captured.err


def test_validate_withholds_an_unknown_field_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "Jane Doe 1961-03-02"
    event = json.loads(sample_messages()[0])
    event["levels"][0][name] = 1
    ndjson = tmp_path / "events.ndjson"
    ndjson.write_text(json.dumps(event) + "\n")

    assert main(["validate", str(ndjson)]) == 1
    out = capsys.readouterr().out
    assert name not in out
    (report,) = (json.loads(line) for line in out.splitlines())
    position = len(event["levels"][0])
    assert report["errors"][0]["field"] == f"levels.0.<field {position}>"


def test_validate_accepts_a_clean_file(tmp_path: Path) -> None:
    ndjson = tmp_path / "events.ndjson"
    ndjson.write_bytes(b"\n".join(sample_messages()[:4]))
    assert main(["validate", str(ndjson)]) == 0


EXAMPLES = Path(__file__).resolve().parents[1] / "schemas" / "examples"


def _spinewatch_validate(target: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    # The installed entry point, as a user runs it: python -m spinewatch.
    return subprocess.run(  # noqa: S603 - our own interpreter and module, fixed arguments
        [sys.executable, "-m", "spinewatch", "validate", target],
        input=stdin,
        capture_output=True,
        timeout=scaled(60),
        check=False,
    )


def test_validate_accepts_the_examples_as_lines_and_as_one_array() -> None:
    lines = _spinewatch_validate(str(EXAMPLES / "events.jsonl"))
    assert (lines.returncode, lines.stdout) == (0, b""), lines.stderr
    count = len((EXAMPLES / "events.jsonl").read_text().splitlines())
    assert lines.stderr.decode().strip() == f"{count} valid, 0 invalid in {count} messages"

    # The bulk path: one message holding a JSON array, pretty-printed, on stdin.
    events = [json.loads(path.read_text()) for path in sorted(EXAMPLES.glob("*.json"))]
    array = _spinewatch_validate("-", json.dumps(events, indent=2).encode())
    assert (array.returncode, array.stdout) == (0, b""), array.stderr
    assert array.stderr.decode().strip() == f"{len(events)} valid, 0 invalid in 1 message"


def test_validate_reports_each_bad_item_of_an_array_by_field_never_by_value() -> None:
    pkp = json.loads((EXAMPLES / "procedure.performed.pkp.json").read_text())
    lacking = json.loads(json.dumps(pkp)) | {"event_id": "6eabfc58-60de-421e-a004-be4fbbe6dd22"}
    del lacking["levels"][0]["approach"], lacking["levels"][0]["cement_volume_ml"]
    out_of_range = pkp | {"event_id": "07527852-1fdf-400a-bffe-82bb3923346a", "pre_vas": 17.25}
    batch = [pkp, lacking, out_of_range, 7]
    result = _spinewatch_validate("-", json.dumps(batch).encode())
    assert result.returncode == 1
    reports = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [(r["line"], r["index"], r["reason"]) for r in reports] == [
        (1, 1, "schema_violation"),
        (1, 2, "schema_violation"),
        (1, 3, "not_an_event"),
    ]
    assert [(e["field"], e["code"]) for e in reports[0]["errors"]] == [("levels", "value_error")]
    assert "lacks approach, cement_volume_ml" in reports[0]["errors"][0]["message"]
    assert [(e["field"], e["code"]) for e in reports[1]["errors"]] == [
        ("pre_vas", "less_than_equal")
    ]
    assert b"17.25" not in result.stdout + result.stderr
    assert result.stderr.decode().strip() == "1 valid, 3 invalid in 1 message"


def test_validate_reads_json_lines_of_events_and_arrays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = sample_messages()[0], sample_messages()[-1]
    lines = tmp_path / "mixed.jsonl"
    messages = [b"{not json", good, b"[" + good + b"," + bad + b"]", b"[]", b""]
    lines.write_bytes(b"\n".join(messages))
    assert main(["validate", str(lines)]) == 1
    captured = capsys.readouterr()
    reports = [json.loads(line) for line in captured.out.splitlines()]
    assert [(r["line"], r["index"], r["reason"]) for r in reports] == [
        (1, None, "invalid_json"),
        (3, 1, "schema_violation"),
        (4, None, "empty_batch"),
    ]
    assert "2 valid, 3 invalid in 4 messages" in captured.err


def test_validate_reports_a_broken_pretty_printed_file_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (EXAMPLES / "followup.recorded.json").read_text()
    broken = tmp_path / "broken.json"
    broken.write_text("\n\n" + text.replace('"vas": 2.5,', '"vas": 2.5'))  # a comma lost
    assert main(["validate", str(broken)]) == 1
    captured = capsys.readouterr()
    (report,) = (json.loads(line) for line in captured.out.splitlines())
    assert (report["line"], report["index"], report["reason"]) == (3, None, "invalid_json")
    assert "0 valid, 1 invalid in 1 message" in captured.err


def test_validate_names_an_unreadable_file_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(tmp_path / "absent.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["nonsense"])
    assert caught.value.code == 2


def test_alerting_settings_are_checked_and_check_mode_reports_a_dead_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPINEWATCH_ALERTING_KAFKA_BROKERS", "not a broker")
    assert main(["alerting"]) == 2
    assert "kafka_brokers" in capsys.readouterr().err
    monkeypatch.setenv("SPINEWATCH_ALERTING_KAFKA_BROKERS", "127.0.0.1:9")
    monkeypatch.setenv("SPINEWATCH_ALERTING_HTTP_PORT", str(free_port()))
    assert main(["alerting", "--check"]) == 1
    assert "not healthy" in capsys.readouterr().err
