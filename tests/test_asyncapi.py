"""schemas/asyncapi.yaml: accepted by the official AsyncAPI parser, and true to the code.

The parser (tools/asyncapi/validate.mjs, pinned in its package-lock.json,
installed by `./dev test`) checks the document against the AsyncAPI 3.0.0
schema and the ruleset `asyncapi validate` applies, resolving the `$ref`s to
the committed JSON Schemas; broken copies show that it can fail. The rest
compares the document with the code: the topics, the event and drift
types, the dead-letter headers and the fact batch format.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from spinewatch.adapters.state_codec import FORMAT_VERSION
from spinewatch.contracts import EVENT_MODELS
from spinewatch.contracts.export import CHANNEL_MODELS, DRIFT_MODELS, schema_file_name
from spinewatch.contracts.topics import DEFAULT_PARTITIONS, Topic
from spinewatch.engine.ingest import MAX_FACTS_PER_MESSAGE
from spinewatch.errors import FieldError
from spinewatch.runtime.dead_letters import MessageOrigin, dead_letter
from spinewatch.runtime.failures import RejectReason
from tests.support import scaled

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
DOCUMENT = SCHEMAS / "asyncapi.yaml"
VALIDATOR_DIR = ROOT / "tools" / "asyncapi"


def _load(path: Path = DOCUMENT) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow local `$ref`s (`#/a/b`) until a node that is not one."""
    while isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
        target: Any = document
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def _file_refs(node: Any) -> list[str]:
    """Every `$ref` to another file, anywhere in the document."""
    if isinstance(node, dict):
        own = node.get("$ref")
        found = [own] if isinstance(own, str) and not own.startswith("#") else []
        return found + [ref for value in node.values() for ref in _file_refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _file_refs(item)]
    return []


def _messages(document: dict[str, Any], channel: str) -> list[dict[str, Any]]:
    channel_node = _resolve(document, document["channels"][channel])
    return [_resolve(document, m) for m in channel_node["messages"].values()]


# --- the real validator --------------------------------------------------------------------


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node not found: run ./dev test (it installs Node.js as root, then the validator)"
        )
    if not (VALIDATOR_DIR / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail(
            "the AsyncAPI validator is not installed: run ./dev test (npm ci in tools/asyncapi)"
        )
    # The project's own script and files: fixed arguments.
    return subprocess.run(  # noqa: S603
        [node, str(VALIDATOR_DIR / "validate.mjs"), str(path)],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )


def test_the_committed_document_is_valid_with_no_error_or_warning() -> None:
    result = _validate(DOCUMENT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert result.stdout.splitlines()[-1].endswith(": valid (1 diagnostics)"), output
    # The one diagnostic: 3.1.0 exists (info). Anything else is news.
    assert "[asyncapi-latest-version]" in result.stdout, output


BREAKAGES = {
    # An operation on a channel that does not exist.
    "missing-channel": (
        'channel:\n      $ref: "#/channels/alerts"',
        'channel:\n      $ref: "#/channels/audit"',
        "error operations.sendAlertAudit.channel.$ref: '#/channels/audit' does not exist",
    ),
    "unknown-version": ("asyncapi: 3.0.0", "asyncapi: 3.9.0", '"3.9.0" is not supported'),
    # A message schema that is not committed: file references are resolved.
    "missing-schema-file": (
        "$ref: ./json-schema/drift.sentinel.v1.schema.json",
        "$ref: ./json-schema/drift.sentinel.v2.schema.json",
        "error components.messages.driftSentinel.payload.$ref: ENOENT",
    ),
    "undeclared-parameter": (
        'address: "{app_id}-drift"',
        'address: "{app}-drift"',
        "Missed: app. [asyncapi3-channel-parameters]",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_validator_rejects_a_broken_copy(tmp_path: Path, breakage: str) -> None:
    old, new, expected = BREAKAGES[breakage]
    text = DOCUMENT.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    shutil.copytree(SCHEMAS / "json-schema", tmp_path / "json-schema")
    (tmp_path / "asyncapi.yaml").write_text(text.replace(old, new), encoding="utf-8")
    result = _validate(tmp_path / "asyncapi.yaml")
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stdout, result.stdout


# --- agreement with the code -----------------------------------------------------------------


def test_channels_are_exactly_the_topics() -> None:
    document = _load()
    addresses = sorted(channel["address"] for channel in document["channels"].values())
    assert addresses == sorted(f"{{app_id}}-{topic.value}" for topic in Topic)
    for name, channel in document["channels"].items():
        assert set(channel["parameters"]) == {"app_id"}, name
        kafka = _resolve(document, channel["bindings"])["kafka"]
        assert kafka["partitions"] == DEFAULT_PARTITIONS, name


def test_every_file_reference_is_a_committed_schema() -> None:
    refs = _file_refs(_load())
    assert refs
    for ref in refs:
        assert (SCHEMAS / ref).resolve().is_file(), ref
        assert (SCHEMAS / ref).resolve().parent == SCHEMAS / "json-schema", ref
    wanted = {schema_file_name(t) for t in [*EVENT_MODELS, *DRIFT_MODELS, *CHANNEL_MODELS]}
    assert {Path(ref).name for ref in refs} == wanted


def _payload_file(message: dict[str, Any]) -> str | None:
    ref = message["payload"].get("$ref")
    return Path(ref).name if isinstance(ref, str) and not ref.startswith("#") else None


def test_the_events_channel_carries_exactly_the_registered_event_types() -> None:
    document = _load()
    messages = _messages(document, "events")
    single = {m["name"]: _payload_file(m) for m in messages if _payload_file(m)}
    assert single == {t: schema_file_name(t) for t in EVENT_MODELS}
    (bulk,) = [m for m in messages if not _payload_file(m)]
    assert bulk["payload"]["type"] == "array"
    items = {Path(ref["$ref"]).name for ref in bulk["payload"]["items"]["oneOf"]}
    assert items == {schema_file_name(t) for t in EVENT_MODELS}


def test_the_drift_channel_carries_exactly_the_drift_message_types() -> None:
    messages = _messages(_load(), "drift")
    assert {m["name"]: _payload_file(m) for m in messages} == {
        t: schema_file_name(t) for t in DRIFT_MODELS
    }


def test_dead_letter_headers_are_the_ones_written() -> None:
    document = _load()
    (message,) = _messages(document, "deadletter")
    headers = _resolve(document, message["headers"])
    origin = MessageOrigin("spinewatch-events", 0, 7)
    error = FieldError("pre_vas", "less_than_equal", "Input should be <= 10")
    single = dead_letter(b"{}", [error], RejectReason.SCHEMA_VIOLATION.value, origin)
    item = dead_letter(b"{}", [error], RejectReason.SCHEMA_VIOLATION.value, origin, index=3)
    assert sorted(headers["required"]) == sorted(name for name, _ in single.headers)
    assert sorted(headers["properties"]) == sorted(name for name, _ in item.headers)
    reasons = headers["properties"]["spinewatch-reason"]["enum"]
    assert sorted(reasons) == sorted(reason.value for reason in RejectReason)


def test_fact_batches_state_the_format_version_and_size_bound() -> None:
    document = _load()
    batch = document["components"]["schemas"]["FactBatch"]
    version, facts = batch["items"]
    assert version["const"] == FORMAT_VERSION
    assert facts["maxItems"] == MAX_FACTS_PER_MESSAGE
    for channel in ("facts", "segmentsChangelog"):
        (message,) = _messages(document, channel)
        assert message["payload"] == {"$ref": "#/components/schemas/FactBatch"}, channel
