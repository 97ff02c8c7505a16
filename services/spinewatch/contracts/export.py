"""JSON Schema export of the event contracts, one document per event type.

Inbound events (what hospital systems send) and the engine's outbound
drift messages (what the alerting service reads). Non-Python producers and
consumers validate against these files; the copies committed under
`schemas/json-schema/` are checked by the test suite to match the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from spinewatch.contracts.drift import DriftInControl, DriftSentinel, DriftSignalled
from spinewatch.contracts.envelope import SCHEMA_VERSION
from spinewatch.contracts.registry import EVENT_MODELS

DRIFT_MODELS: dict[str, type[BaseModel]] = {
    "drift.signalled": DriftSignalled,
    "drift.in_control": DriftInControl,
    "drift.sentinel": DriftSentinel,
}


def schema_file_name(event_type: str) -> str:
    return f"{event_type}.v{SCHEMA_VERSION}.schema.json"


def event_json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema (draft 2020-12) of every event type, keyed by file name."""
    documents: dict[str, dict[str, Any]] = {}
    models: dict[str, type[BaseModel]] = {**EVENT_MODELS, **DRIFT_MODELS}
    for event_type, model in sorted(models.items()):
        schema = model.model_json_schema(mode="validation")
        documents[schema_file_name(event_type)] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:spinewatch:event:{event_type}:v{SCHEMA_VERSION}",
            **schema,
        }
    return documents


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def write_json_schemas(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in event_json_schemas().items():
        path = out_dir / name
        path.write_text(render(document), encoding="utf-8")
        written.append(path)
    return written
