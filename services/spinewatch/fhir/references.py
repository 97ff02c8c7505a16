"""Entries of a document, their identities, and references between them.

An identity is the string a resource is known by, and the input of every
pseudonym (fhir/pseudonyms.py). For a resource in a document, in order:

1. `Type/<id>` from the resource's own `id`;
2. the `request.url` of a PUT (`Type/<id>`, or a conditional `Type?query`);
3. `Type?<ifNoneExist>` of a conditional create (POST);
4. the entry's `fullUrl`: `Type/<id>` when it is a RESTful URL, else the
   URL itself (a `urn:uuid:` is only stable if the sender keeps it so).

A reference resolves to the identity of the entry it names (its `fullUrl`
or `Type/<id>`), or, outside the document, to `Type/<id>` (an absolute URL
loses its base and `_history`) or a conditional `Type?query` as written.
A `urn:` reference outside the document has no type and names nothing.

Everything here reads the raw JSON defensively: it also serves
`referenced_procedures`, which must not fail on any input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

_ID = r"[A-Za-z0-9\-.]{1,64}"
_TYPE = r"[A-Z][A-Za-z]{1,63}"
LITERAL: Final = re.compile(rf"(?:.*/)?(?P<type>{_TYPE})/(?P<id>{_ID})(?:/_history/{_ID})?")
CONDITIONAL: Final = re.compile(rf"(?P<type>{_TYPE})\?\S.*")
ID: Final = re.compile(_ID)

# Resource types whose name a label may show: the mapped ones and the
# supporting ones. Any other resourceType string is the sender's and is
# not repeated.
MAPPED_TYPES: Final = ("Procedure", "Observation", "AdverseEvent")
SUPPORT_TYPES: Final = frozenset(
    {
        "Patient", "Practitioner", "PractitionerRole", "Organization", "Location",
        "Encounter", "Condition", "Device",
    }
)  # fmt: skip
NAMED_TYPES: Final = frozenset(MAPPED_TYPES) | SUPPORT_TYPES | {"Bundle"}


@dataclass(frozen=True)
class Entry:
    """One resource of a document, by position."""

    position: int | None  # None: the document is this single resource
    resource: Mapping[str, Any] | None
    resource_type: str | None
    identity: str | None
    full_url: str | None
    method: str | None

    @property
    def label(self) -> str:
        kind = self.resource_type if self.resource_type in NAMED_TYPES else None
        shown = f"({kind})" if kind else "(unsupported resource type)"
        if self.position is None:
            return f"resource {shown}"
        return f"entry[{self.position}] {shown}"


def _text(node: Any, key: str) -> str | None:
    value = node.get(key) if isinstance(node, Mapping) else None
    return value if isinstance(value, str) else None


def _entry(position: int | None, raw: Any, resource: Any) -> Entry:
    request = raw.get("request") if isinstance(raw, Mapping) else None
    resource_map = resource if isinstance(resource, Mapping) else None
    resource_type = _text(resource_map, "resourceType")
    full_url = _text(raw, "fullUrl")
    method = _text(request, "method")
    return Entry(
        position=position,
        resource=resource_map,
        resource_type=resource_type,
        identity=_identity(resource_type, resource_map, request, method, full_url),
        full_url=full_url,
        method=method,
    )


def _identity(
    resource_type: str | None,
    resource: Mapping[str, Any] | None,
    request: Any,
    method: str | None,
    full_url: str | None,
) -> str | None:
    if resource_type is None or not re.fullmatch(_TYPE, resource_type):
        return None
    own_id = _text(resource, "id")
    url = _text(request, "url")
    if_none_exist = _text(request, "ifNoneExist")
    candidates = (
        f"{resource_type}/{own_id}" if own_id is not None and ID.fullmatch(own_id) else None,
        _same_type(resource_type, url) if method == "PUT" else None,
        f"{resource_type}?{if_none_exist}" if method == "POST" and if_none_exist else None,
        (_same_type(resource_type, full_url) or full_url) if full_url else None,
    )
    return next((c for c in candidates if c is not None), None)


def _same_type(resource_type: str, url: str | None) -> str | None:
    """`Type/<id>` or a conditional `Type?query` of a URL, when it names this type."""
    if url is None:
        return None
    literal = LITERAL.fullmatch(url)
    if literal and literal["type"] == resource_type:
        return f"{resource_type}/{literal['id']}"
    conditional = CONDITIONAL.fullmatch(url)
    if conditional and conditional["type"] == resource_type:
        return url
    return None


class Document:
    """The entries of a Bundle, or the one resource a document is."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self._by_reference: dict[str, Entry] = {}
        self._procedures = frozenset(
            e.identity for e in entries if e.resource_type == "Procedure" and e.identity
        )
        for entry in entries:
            for key in (entry.full_url, entry.identity):
                if key is not None:
                    self._by_reference.setdefault(key, entry)

    @classmethod
    def single(cls, resource: Mapping[str, Any]) -> Document:
        return cls([_entry(None, None, resource)])

    @classmethod
    def bundle(cls, raw_entries: list[Any]) -> Document:
        return cls(
            [
                _entry(i, raw, raw.get("resource") if isinstance(raw, Mapping) else None)
                for i, raw in enumerate(raw_entries)
            ]
        )

    def entry_for(self, reference: str) -> Entry | None:
        return self._by_reference.get(reference)

    def resolve(self, reference: str) -> tuple[str | None, str] | None:
        """(resource type or None when unknown, identity) of a reference string."""
        entry = self._by_reference.get(reference)
        if entry is None:
            literal = LITERAL.fullmatch(reference)
            if literal:
                entry = self._by_reference.get(f"{literal['type']}/{literal['id']}")
                if entry is None:
                    return literal["type"], f"{literal['type']}/{literal['id']}"
            elif CONDITIONAL.fullmatch(reference):
                return reference.split("?", 1)[0], reference
            elif reference.startswith("urn:"):
                return None, reference
            else:
                return None
        return entry.resource_type, entry.identity or reference

    def procedure_references(self, entry: Entry) -> Iterator[str]:
        """Identities of the Procedures an Observation or AdverseEvent points at."""
        for reference in _pointers(entry):
            resolved = self.resolve(reference)
            if resolved is not None and resolved[0] == "Procedure":
                yield resolved[1]

    def procedure_identities(self) -> frozenset[str]:
        return self._procedures


def _pointers(entry: Entry) -> Iterator[str]:
    """Reference strings an Observation (partOf, focus) or AdverseEvent (suspectEntity) holds."""
    resource = entry.resource or {}
    if entry.resource_type == "Observation":
        references: list[Any] = []
        for key in ("partOf", "focus"):
            value = resource.get(key)
            references.extend(value if isinstance(value, list) else [])
    elif entry.resource_type == "AdverseEvent":
        suspects = resource.get("suspectEntity")
        references = [
            s.get("instance")
            for s in (suspects if isinstance(suspects, list) else [])
            if isinstance(s, Mapping)
        ]
    else:
        return
    for reference in references:
        text = _text(reference, "reference")
        if text is not None:
            yield text
