"""The FHIR door echoes nothing it was sent, and never fails on what it is sent.

A marker string is planted at every value and in every object of the example
Bundle in turn (as the value, and as an unknown key); whatever the mapping
then does, the marker appears in no event, no reject and no repr. The
subject references, the MRNs of the conditional creates and the Patient
fullUrls never appear either. Arbitrary JSON never makes it raise.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spinewatch.fhir import FhirMapping, map_fhir, referenced_procedures
from tests.test_fhir_mapping import BREAKS, CTX, Doc, entry, example

MARKER = "Zq9-secret-Jane"  # a valid FHIR id, matching no contract pattern
LABEL = re.compile(
    r"document|resource \(\w+\)|resource \(unsupported resource type\)|"
    r"entry\[\d+\] \((\w+|unsupported resource type)\)"
)

Path = tuple[str | int, ...]


def dumped(mapping: FhirMapping) -> str:
    events = [json.loads(e.model_dump_json()) for e in mapping.events]
    rejects = [dataclasses.asdict(r) for r in mapping.rejects]
    return json.dumps([events, rejects]) + repr(mapping) + "".join(map(str, mapping.rejects))


def places(node: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    yield path, node
    children = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in children:
        yield from places(child, (*path, key))


def at(document: Doc, path: Path) -> Any:
    node: Any = document
    for key in path:
        node = node[key]
    return node


def planted(path: Path, as_key: bool) -> Doc:
    document = example()
    if as_key:
        at(document, path)[MARKER] = "x"
    else:
        at(document, path[:-1])[path[-1]] = MARKER
    return document


LEAVES = [path for path, node in places(example()) if path and not isinstance(node, dict | list)]
OBJECTS = [path for path, node in places(example()) if isinstance(node, dict)]


def test_a_marker_as_any_value_or_any_key_is_never_echoed() -> None:
    assert len(LEAVES) > 200
    assert len(OBJECTS) > 100
    rejected = 0
    for path, as_key in [(p, False) for p in LEAVES] + [(p, True) for p in OBJECTS]:
        mapping = map_fhir(planted(path, as_key), CTX)
        output = dumped(mapping)
        assert MARKER not in output, (path, as_key)
        assert all(LABEL.fullmatch(r.entry) for r in mapping.rejects), mapping.rejects
        rejected += bool(mapping.rejects)
    # The plants did reach the mapping: most of them broke an entry.
    assert rejected > len(LEAVES) // 2


def _secrets(document: Doc) -> set[str]:
    """Every way the example names its patients."""
    found = set()
    for item in document["entry"]:
        if item["resource"]["resourceType"] == "Patient":
            found |= {item["fullUrl"], item["request"]["ifNoneExist"]}
            found |= {i["value"] for i in item["resource"]["identifier"]}
            found.add(item["fullUrl"].removeprefix("urn:uuid:"))
    return found


@pytest.mark.parametrize("case", [None, *BREAKS])
def test_subject_references_appear_nowhere_in_events_or_rejects(case: str | None) -> None:
    document = example()
    if case is not None:
        rid, breaking, _ = BREAKS[case]
        breaking(entry(document, rid))
    for item in document["entry"]:  # half by literal reference, half as in the example
        if item["resource"].get("id", "").startswith("pain-pvp"):
            item["resource"]["subject"] = {"reference": f"Patient/{MARKER}"}
    output = dumped(map_fhir(document, CTX))
    for secret in (*_secrets(document), MARKER):
        assert secret not in output


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["resourceType", "type", "entry", "resource", "id", "status", "x"])
            | st.text(max_size=6),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)
RESOURCE_TYPES = st.sampled_from(
    ["Procedure", "Observation", "AdverseEvent", "Condition", "Patient", "Bundle", "Basic"]
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(document=JSON)
def test_any_json_gives_events_or_rejects_never_an_exception(document: Any) -> None:
    mapping = map_fhir(document, CTX)
    if not isinstance(document, dict):
        assert [r.entry for r in mapping.rejects] == ["document"]
    assert all(LABEL.fullmatch(r.entry) for r in mapping.rejects)
    assert isinstance(referenced_procedures(document, CTX), frozenset)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(kind=RESOURCE_TYPES, body=st.dictionaries(st.text(max_size=8), JSON, max_size=6))
def test_any_resource_of_a_mapped_type_is_mapped_or_rejected(kind: str, body: Doc) -> None:
    resource = body | {"resourceType": kind}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}
    alone, inside = map_fhir(resource, CTX), map_fhir(bundle, CTX)
    # One event or one reject per resource (a support resource in a Bundle: neither).
    assert kind == "Bundle" or len(alone.events) + len(alone.rejects) == 1
    assert len(inside.events) + len(inside.rejects) <= 1
    assert isinstance(referenced_procedures(bundle, CTX), frozenset)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(min_value=0), value=JSON)
def test_any_element_of_the_example_replaced_by_any_json_never_raises(
    index: int, value: Any
) -> None:
    document = example()
    path = LEAVES[index % len(LEAVES)]
    at(document, path[:-1])[path[-1]] = copy.deepcopy(value)
    mapping = map_fhir(document, CTX)
    assert len(mapping.events) + len(mapping.rejects) >= 1
    assert isinstance(referenced_procedures(document, CTX), frozenset)
