"""Cross-field rules restated in JSON Schema, so the exported schemas are as strict as the models.

Pydantic exports each field's own constraints, but a rule across fields
lives in a validator, which the exported schema cannot see: before these
fragments, a PKP whose levels lacked approach and cement volume passed the
JSON Schema and was dead-lettered by the engine. Each model with such a rule
states it a second time, right next to the validator it mirrors, as a Draft
2020-12 fragment (`if`/`then`/`else`, `not`, `anyOf`, `contains` with
`minContains`) attached through `json_schema_extra`; `schema_rules` puts the
fragments under `allOf` and appends to the model's description the rules
JSON Schema cannot express, which only the engine checks.

The fragments refer to no `$defs` entry: the same model schema is also
embedded in other documents (an OpenAPI document, the `Event` union), where
definitions live elsewhere. tests/test_schema_strictness.py generates events
from the exported schemas and proves that schema-valid means engine-valid,
apart from the listed residue.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import Any

from pydantic.config import JsonDict

# A JSON Schema fragment, built from plain dicts and lists.
Fragment = dict[str, Any]

ENGINE_ONLY_HEADING = "Rules the engine checks that JSON Schema cannot express:"

# A nullable field pydantic exports as anyOf[T, null]; the models treat an
# explicit null like an absent field, so "given" means present and not null.
NOT_NULL: Fragment = {"not": {"type": "null"}}


def given(*names: str) -> Fragment:
    """Every one of `names` is present and not null."""
    return {"required": list(names), "properties": dict.fromkeys(names, NOT_NULL)}


def one_of(name: str, values: Iterable[Enum | str]) -> Fragment:
    """`name` is present and one of `values` (a condition for `when`)."""
    return {"required": [name], "properties": {name: {"enum": _values(values)}}}


def is_value(name: str, value: Enum | str | int) -> Fragment:
    """`name` is present and equals `value` (a condition for `when`)."""
    constant = value.value if isinstance(value, Enum) else value
    return {"required": [name], "properties": {name: {"const": constant}}}


def when(condition: Fragment, then: Fragment, otherwise: Fragment | None = None) -> Fragment:
    rule: Fragment = {"if": condition, "then": then}
    if otherwise is not None:
        rule["else"] = otherwise
    return rule


def each_item(array: str, schema: Fragment) -> Fragment:
    """Every item of the array field `array` satisfies `schema`."""
    return {"properties": {array: {"items": schema}}}


def unique_by(key: str, values: Iterable[Enum | str]) -> Fragment:
    """No two items of an array share the same `key`.

    `uniqueItems` compares whole items, so two levels of T12 with different
    cement volumes would pass it. The key's domain is a closed vocabulary,
    so "at most one item per value" is exact: for no value do two items
    contain it (`minContains` is Draft 2019-09 and later).
    """
    return {
        "not": {
            "anyOf": [
                {"contains": is_value(key, value), "minContains": 2} for value in _values(values)
            ]
        }
    }


def schema_rules(*rules: Fragment, engine_only: Sequence[str] = ()) -> Callable[[JsonDict], None]:
    """A `json_schema_extra` that adds `rules` and documents `engine_only`."""

    def extra(schema: JsonDict) -> None:
        if rules:
            existing = schema.get("allOf", [])
            # A copy per document: fragments share sub-dicts (NOT_NULL).
            fresh = copy.deepcopy(list(rules))
            schema["allOf"] = [*(existing if isinstance(existing, list) else []), *fresh]
        if engine_only:
            listed = "\n".join(f"- {rule}" for rule in engine_only)
            own = schema.get("description")
            prefix = f"{own}\n\n" if isinstance(own, str) and own else ""
            schema["description"] = f"{prefix}{ENGINE_ONLY_HEADING}\n{listed}"

    return extra


def _values(values: Iterable[Enum | str]) -> list[Any]:
    return [value.value if isinstance(value, Enum) else value for value in values]
