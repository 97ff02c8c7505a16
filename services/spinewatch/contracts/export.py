"""JSON Schema export of the event contracts, one document per event type.

Inbound events (what hospital systems send) and the engine's outbound
drift messages (what the alerting service reads). Non-Python producers and
consumers validate against these files; the copies committed under
`schemas/json-schema/` are checked by the test suite to match the models,
and `schemas/asyncapi.yaml` refers to them by file name. They carry the
contracts' cross-field rules as well (`if`/`then`, `not`, `contains`, stated
next to each validator through `schema_rules`), and each event schema's
description lists the rules JSON Schema cannot express, which only the
engine checks.

`document_json_schema` exports any other whole-document model the same way
(the baseline catalog: the `spinewatch schemas` command adds it, since the
contracts may not import the layers above them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from spinewatch.contracts.control import ChartReset
from spinewatch.contracts.drift import (
    DriftCompleteness,
    DriftInControl,
    DriftRedesigned,
    DriftSentinel,
    DriftSentinelWithdrawn,
    DriftSignalled,
    DriftSilence,
)
from spinewatch.contracts.envelope import SCHEMA_VERSION
from spinewatch.contracts.lookback import DriftLookback
from spinewatch.contracts.registry import EVENT_MODELS

DRIFT_MODELS: dict[str, type[BaseModel]] = {
    "drift.signalled": DriftSignalled,
    "drift.in_control": DriftInControl,
    "drift.sentinel": DriftSentinel,
    "drift.silence": DriftSilence,
    "drift.sentinel_withdrawn": DriftSentinelWithdrawn,
    "drift.completeness": DriftCompleteness,
    "drift.redesigned": DriftRedesigned,
}
# One message type each on `{app}-lookback` and `{app}-control`.
CHANNEL_MODELS: dict[str, type[BaseModel]] = {
    "drift.lookback": DriftLookback,
    "chart.reset": ChartReset,
}


def latest_version(event_type: str) -> int:
    """The newest schema version of an event or drift message type.

    One document per type, named by its newest version: it validates every
    version the engine reads (followup.recorded.v2 accepts version 1 events
    too), so a producer still on an older version validates against it.
    """
    model = {**EVENT_MODELS, **DRIFT_MODELS, **CHANNEL_MODELS}[event_type]
    versions = get_args(model.model_fields["schema_version"].annotation)
    return max((int(v) for v in versions), default=SCHEMA_VERSION)


def schema_file_name(event_type: str) -> str:
    return f"{event_type}.v{latest_version(event_type)}.schema.json"


def event_json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema (draft 2020-12) of every event type, keyed by file name."""
    documents: dict[str, dict[str, Any]] = {}
    models: dict[str, type[BaseModel]] = {**EVENT_MODELS, **DRIFT_MODELS, **CHANNEL_MODELS}
    for event_type, model in sorted(models.items()):
        schema = model.model_json_schema(mode="validation")
        documents[schema_file_name(event_type)] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:spinewatch:event:{event_type}:v{latest_version(event_type)}",
            **schema,
        }
    return documents


def document_json_schema(
    model: type[BaseModel], schema_id: str, description: str
) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a whole document that `model` validates."""
    schema = model.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": schema_id,
        **schema,
        "description": description,
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def write_json_schemas(
    out_dir: Path, documents: Mapping[str, dict[str, Any]] | None = None
) -> list[Path]:
    """Write `documents` (by default the event schemas), one file per name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in (event_json_schemas() if documents is None else documents).items():
        path = out_dir / name
        path.write_text(render(document), encoding="utf-8")
        written.append(path)
    return written
