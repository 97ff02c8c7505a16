"""The baseline catalog's JSON Schema, beside the event schemas it is exported with.

Here, not in `contracts.export`, because the contracts lie below the
baselines: they may not import the catalog's model.
"""

from __future__ import annotations

from typing import Any

from spinewatch.baselines.model import BaselineCatalog
from spinewatch.contracts.export import document_json_schema, event_json_schemas

CATALOG_SCHEMA_FILE = "baseline-catalog.schema.json"
# For a non-Python tool that writes or checks catalog.toml: what the
# model's schema says, and the rules only the loader can check.
CATALOG_SCHEMA_DESCRIPTION = (
    "The literature baseline catalog as catalog.toml holds it: `parse_catalog` validates "
    "the parsed TOML document as it is, with no transformation, so this schema describes "
    "the file's tables and keys directly (TOML has no null: an optional key is left out). "
    "Checked when the catalog is loaded, beyond this schema: baseline ids are unique, "
    "every cited seed is declared under `seeds`, at most one entry is preferred per "
    "(metric, procedure, indication, unit, timepoint), a proportion's numerator does not "
    "exceed its denominator, and a range's low does not exceed its high (within 0..1 "
    "for fractions)."
)


def json_schemas() -> dict[str, dict[str, Any]]:
    """Every JSON Schema committed under schemas/json-schema/, keyed by file name."""
    catalog = document_json_schema(
        BaselineCatalog, "urn:spinewatch:baseline-catalog", CATALOG_SCHEMA_DESCRIPTION
    )
    return {**event_json_schemas(), CATALOG_SCHEMA_FILE: catalog}
