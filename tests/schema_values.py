"""Hypothesis strategies that generate JSON values from a JSON Schema (Draft 2020-12).

Used by tests/test_schema_strictness.py to generate events from the
exported event schemas. Why not hypothesis-jsonschema (0.23.1, the latest):
it calls a Hypothesis internal (`many.more()`) that the Hypothesis this
project runs no longer has, so every object schema fails; bridged, it did not
finish 100 procedure examples in ten minutes (it re-canonicalises the
conditional schema at every draw); and it models Drafts 4-7 only (no
`minContains`).

This interpreter covers the keywords the exported schemas use and refuses
any other, so a new keyword fails the test instead of going unexplored.
Soundness does not rest on it: the tests keep only the values the real
validator accepts. Its job is reach. Conditional rules are resolved in
order: the properties an `if` reads are drawn first, from their own
schemas, then the `then` or `else` that applies constrains the properties
drawn after them, so both branches of every rule are generated. `anyOf` is
a choice of branch, conjunctions of simple schemas are intersected (types,
enums, numeric bounds), and a `not` other than "not null" filters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st
from jsonschema import Draft202012Validator

Schema = dict[str, Any]

_ANNOTATIONS = frozenset({"title", "description", "default", "$schema", "$id", "$defs"})
_MODELLED = frozenset(
    {
        "$ref",
        "type",
        "enum",
        "const",
        "anyOf",
        "allOf",
        "not",
        "if",
        "then",
        "else",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "pattern",
        "format",
    }
)
_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})
_NOT_NULL = {"not": {"type": "null"}}


class JsonValues:
    """Strategies for the values one schema document (with its `$defs`) admits."""

    def __init__(self, document: Schema, formats: Mapping[str, st.SearchStrategy[str]]) -> None:
        self._document = document
        self._formats = formats

    def values(self) -> st.SearchStrategy[Any]:
        strategy = self._conjunction([self._document])
        if strategy is None:
            raise ValueError("the schema admits no value")
        return strategy

    # --- conjunctions -----------------------------------------------------------------

    def _flatten(self, schemas: list[Schema]) -> list[Schema]:
        """Resolve `$ref`s and splice `allOf` members in, recursively."""
        flat: list[Schema] = []
        for given in schemas:
            schema = self._resolved(given)
            unknown = set(schema) - _MODELLED - _ANNOTATIONS
            if unknown:
                raise ValueError(f"keywords this generator does not model: {sorted(unknown)}")
            own = {k: v for k, v in schema.items() if k != "allOf" and k not in _ANNOTATIONS}
            if own:
                flat.append(own)
            flat.extend(self._flatten(schema.get("allOf", [])))
        return flat

    def _resolved(self, schema: Schema) -> Schema:
        while "$ref" in schema:
            reference = schema["$ref"]
            if not reference.startswith("#/"):
                raise ValueError(f"only local references: {reference}")
            target: Any = self._document
            for part in reference[2:].split("/"):
                target = target[part]
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {"allOf": [target, siblings]} if siblings else target
        return schema

    def _conjunction(self, schemas: list[Schema]) -> st.SearchStrategy[Any] | None:
        """A strategy for values valid under every schema, or None if none can be."""
        flat = self._flatten(schemas)
        for position, schema in enumerate(flat):
            if "anyOf" in schema:
                rest = flat[:position] + flat[position + 1 :]
                base = {k: v for k, v in schema.items() if k != "anyOf"}
                options = [self._conjunction([*rest, base, branch]) for branch in schema["anyOf"]]
                usable = [option for option in options if option is not None]
                return st.one_of(usable) if usable else None
        return self._simple(flat)

    def _simple(self, flat: list[Schema]) -> st.SearchStrategy[Any] | None:
        types = set(_TYPES)
        negations: list[Schema] = []
        enum: list[Any] | None = None
        for schema in flat:
            if "type" in schema:
                named = schema["type"]
                types = _meet(types, {named} if isinstance(named, str) else set(named))
            if "not" in schema:
                if schema["not"] == _NOT_NULL["not"]:
                    types.discard("null")
                else:
                    negations.append(schema["not"])
            for values in ([schema["const"]] if "const" in schema else None, schema.get("enum")):
                if values is not None:
                    enum = list(values) if enum is None else [v for v in enum if v in values]
        refused = [Draft202012Validator(self._with_defs(n)) for n in negations]
        if enum is not None:
            admitted = [
                value
                for value in enum
                if _json_type(value) in _widened(types)
                and not any(v.is_valid(value) for v in refused)
            ]
            return st.sampled_from(admitted) if admitted else None
        if not types:
            return None
        by_type = [self._typed(kind, flat) for kind in sorted(types)]
        strategy = st.one_of([s for s in by_type if s is not None])
        if refused:
            strategy = strategy.filter(lambda value: not any(v.is_valid(value) for v in refused))
        return strategy

    def _with_defs(self, schema: Schema) -> Schema:
        return {**schema, "$defs": self._document.get("$defs", {})}

    # --- one JSON type ----------------------------------------------------------------

    def _typed(self, kind: str, flat: list[Schema]) -> st.SearchStrategy[Any] | None:
        if kind == "null":
            return st.none()
        if kind == "boolean":
            return st.booleans()
        if kind in ("integer", "number"):
            return _numbers(kind, flat)
        if kind == "string":
            return self._strings(flat)
        if kind == "array":
            return self._arrays(flat)
        return self._objects(flat)

    def _strings(self, flat: list[Schema]) -> st.SearchStrategy[str]:
        formats = {s["format"] for s in flat if "format" in s}
        patterns = [re.compile(s["pattern"]) for s in flat if "pattern" in s]
        if len(formats) > 1:
            raise ValueError(f"conflicting formats {sorted(formats)}")
        if formats and (kind := formats.pop()) in self._formats:
            strategy = self._formats[kind]
        elif patterns:
            strategy = st.from_regex(patterns.pop(0), fullmatch=True)
        else:
            # Free text: the contracts have none (tests/test_contracts.py), so
            # any appearing here is a schema the engine would not agree with.
            strategy = st.text(max_size=20)
        if patterns:
            strategy = strategy.filter(lambda text: all(p.search(text) for p in patterns))
        return strategy

    def _arrays(self, flat: list[Schema]) -> st.SearchStrategy[list[Any]] | None:
        items = [s["items"] for s in flat if "items" in s]
        low = max((s["minItems"] for s in flat if "minItems" in s), default=0)
        high = min((s["maxItems"] for s in flat if "maxItems" in s), default=low + 5)
        element = self._conjunction(items) if items else st.none()
        if element is None:
            return st.just([]) if low == 0 else None
        return st.lists(element, min_size=low, max_size=high)

    def _objects(self, flat: list[Schema]) -> st.SearchStrategy[dict[str, Any]]:
        properties: dict[str, list[Schema]] = {}
        required: set[str] = set()
        rules: list[Schema] = []
        for schema in flat:
            for name, sub in schema.get("properties", {}).items():
                properties.setdefault(name, []).append(sub)
            required.update(schema.get("required", []))
            if "if" in schema:
                rules.append(schema)
        # The properties the conditions read are drawn first (in declared order).
        read = {name for rule in rules for name in _read_by(rule["if"])}
        first = [name for name in properties if name in read]
        then = [name for name in properties if name not in read]

        @st.composite
        def objects(draw: st.DrawFn) -> dict[str, Any]:
            constraints = {name: list(subs) for name, subs in properties.items()}
            needed = set(required)
            value: dict[str, Any] = {}
            for name in first:
                self._draw_property(draw, value, name, constraints[name], name in needed)
            for rule in rules:
                holds = Draft202012Validator(self._with_defs(rule["if"])).is_valid(value)
                branch = rule.get("then" if holds else "else")
                for part in self._flatten([] if branch is None else [branch]):
                    for key, sub in part.get("properties", {}).items():
                        constraints.setdefault(key, []).append(sub)
                    needed.update(part.get("required", []))
            for name in then:
                self._draw_property(draw, value, name, constraints[name], name in needed)
            return value

        return objects()

    def _draw_property(
        self,
        draw: st.DrawFn,
        value: dict[str, Any],
        name: str,
        schemas: list[Schema],
        needed: bool,
    ) -> None:
        # An optional property is left out half the time: absent and null
        # are different inputs, and both must be explored.
        if needed or draw(st.booleans()):
            strategy = self._conjunction(schemas)
            if strategy is not None:
                value[name] = draw(strategy)


def _read_by(condition: Schema) -> set[str]:
    return set(condition.get("required", [])) | set(condition.get("properties", {}))


def _meet(left: set[str], right: set[str]) -> set[str]:
    both = left & right
    if ("number" in left and "integer" in right) or ("integer" in left and "number" in right):
        both.add("integer")
    return both


def _widened(types: set[str]) -> set[str]:
    return types | {"integer"} if "number" in types else types


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _numbers(kind: str, flat: list[Schema]) -> st.SearchStrategy[Any] | None:
    low = max((s["minimum"] for s in flat if "minimum" in s), default=None)
    high = min((s["maximum"] for s in flat if "maximum" in s), default=None)
    above = max((s["exclusiveMinimum"] for s in flat if "exclusiveMinimum" in s), default=None)
    below = min((s["exclusiveMaximum"] for s in flat if "exclusiveMaximum" in s), default=None)
    if above is not None and (low is None or above >= low):
        low, exclude_low = above, True
    else:
        exclude_low = False
    if below is not None and (high is None or below <= high):
        high, exclude_high = below, True
    else:
        exclude_high = False
    if low is not None and high is not None and low > high:
        return None
    first = None if low is None else math.ceil(low) + (exclude_low and math.ceil(low) == low)
    last = None if high is None else math.floor(high) - (exclude_high and math.floor(high) == high)
    empty = first is not None and last is not None and first > last
    integers = None if empty else st.integers(first, last)
    if kind == "integer":
        return integers
    floats = st.floats(
        low,
        high,
        allow_nan=False,
        allow_infinity=False,
        exclude_min=exclude_low,
        exclude_max=exclude_high,
    )
    return floats if integers is None else st.one_of(integers, floats)
