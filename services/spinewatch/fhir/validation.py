"""Structural validation of a FHIR resource by the fhir.resources models.

The models are R4B's (fhir.resources 8 ships R5 and R4B, no R4): for the
four resources mapped here, R4B has exactly R4's elements (checked element
by element against fhir.resources 6.4, the last R4 release, see
schemas/fhir/README.md). What the library reports is turned into
FieldErrors that echo nothing the sender wrote:

- a location keeps an element name only where the model at that position
  defines it; an unknown key (which may itself be identifying) becomes
  `<element withheld>`;
- a message is chosen by the error's type from fixed texts, never the
  library's own text, which may quote a value (its "wrong resource type"
  message repeats the type it was given).
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from fhir_core.fhirabstractmodel import FHIRAbstractModel
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from spinewatch.errors import FieldError, InvalidEvent

M = TypeVar("M", bound=FHIRAbstractModel)

WITHHELD: Final = "<element withheld>"

_TYPE_ERRORS: Final = frozenset(
    {
        "string_type", "int_type", "int_parsing", "int_from_float", "float_type",
        "float_parsing", "bool_type", "bool_parsing", "list_type", "dict_type",
        "model_type", "model_attributes_type", "decimal_type", "decimal_parsing",
        "datetime_type", "date_type", "is_instance_of",
    }
)  # fmt: skip


def validate(model: type[M], resource: Mapping[str, Any]) -> M:
    """The resource as its FHIR model, or `InvalidEvent` with sanitized errors."""
    resource_type = model.__name__
    try:
        return model.model_validate(dict(resource))
    except ValidationError as exc:
        details = exc.errors(include_input=False, include_url=False)
        raise InvalidEvent([_field_error(resource_type, model, err) for err in details]) from None
    except Exception:
        # A library fault must reject the entry, not fail the request:
        # fhir.resources raises KeyError for a contained resource of a type
        # it has no R4B model for (R4's MedicinalProduct, or any made-up
        # name), and its message repeats that name.
        raise InvalidEvent(
            [
                FieldError(
                    resource_type,
                    "unreadable_resource",
                    "the FHIR models could not read this resource; a contained resource of "
                    "a type unknown to FHIR R4B is one cause",
                )
            ]
        ) from None


def _field_error(resource_type: str, model: type[BaseModel], err: ErrorDetails) -> FieldError:
    path = _safe_path(model, err["loc"])
    location = resource_type + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return FieldError(location, "fhir_" + err["type"].replace(".", "_"), _message(err))


# Fixed texts by error type; value errors by a marker of the library's text.
_MESSAGES: Final[tuple[tuple[Callable[[str, str], bool], str], ...]] = (
    (lambda kind, _: kind.endswith("missing"), "a required element is missing"),
    (
        lambda kind, _: kind == "extra_forbidden",
        "not an element of FHIR R4 at this position (name withheld)",
    ),
    (lambda kind, _: kind in _TYPE_ERRORS, "the JSON type is wrong for this element"),
    (
        lambda kind, text: kind == "string_pattern_mismatch" or "spec regex" in text,
        "not in the FHIR format of this element",
    ),
    (lambda _, text: "timezone" in text, "a time of day needs a timezone"),
    (
        lambda _, text: "but got multiple" in text,
        "more than one type is given for a choice element [x]",
    ),
    (
        lambda kind, _: kind.startswith("fhir-validation-wrong-resource-type"),
        "resourceType does not match the resource",
    ),
)


def _message(err: ErrorDetails) -> str:
    for matches, message in _MESSAGES:
        if matches(err["type"], err["msg"]):
            return message
    return "invalid for this element"


def _safe_path(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[int | str]:
    """The location, with every name the model does not define withheld."""
    current: type[BaseModel] | None = model
    path: list[int | str] = []
    for part in loc:
        if isinstance(part, int):
            path.append(part)
            continue
        element = _elements(current).get(part) if current is not None else None
        if element is None:
            path.append(WITHHELD)
            current = None
        else:
            path.append(part)
            current = element
    return path


@functools.cache
def _elements(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """JSON names of a model's elements, each to the model of its value (None: primitive)."""
    elements: dict[str, type[BaseModel] | None] = {}
    for name, info in model.model_fields.items():
        elements[info.alias or name] = _value_model(info.annotation)
    return elements


def _value_model(annotation: Any) -> type[BaseModel] | None:
    # fhir.resources annotates with lazy "...Type" classes that name their
    # model (get_model_klass), inside Optional[...] and List[...].
    klass = getattr(annotation, "get_model_klass", None)
    if klass is not None:
        found = klass()
        return found if isinstance(found, type) and issubclass(found, BaseModel) else None
    for arg in typing.get_args(annotation):
        found = _value_model(arg)
        if found is not None:
            return found
    return None
