"""`spinewatch validate` and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spinewatch.cli.main import main
from spinewatch.devservers.tansu import free_port
from tests.samples import sample_messages


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
