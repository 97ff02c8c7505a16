"""Reading FHIR datatypes: codings, extensions, quantities and clinical times.

Helpers raise `InvalidEvent` with one FieldError whose location is a FHIR
path and whose message names what was expected, never what was found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time
from typing import Any, TypeVar

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.quantity import Quantity

from spinewatch.errors import FieldError, InvalidEvent
from spinewatch.fhir import codes

T = TypeVar("T")


def unmappable(location: str, code: str, message: str) -> InvalidEvent:
    return InvalidEvent([FieldError(location, code, message)])


def concept_values(
    concept: CodeableConcept | None, resolve: Callable[[str, str], T | None]
) -> set[T]:
    """What the codings of a concept stand for, by `resolve(system, code)`.

    Codings of one CodeableConcept are translations of one meaning; the
    caller rejects a concept whose codings disagree.
    """
    found: set[T] = set()
    for coding in (concept.coding or []) if concept is not None else []:
        if coding.system is not None and coding.code is not None:
            value = resolve(coding.system, coding.code)
            if value is not None:
                found.add(value)
    return found


def has_coding(concept: CodeableConcept | None, system: str, code: str) -> bool:
    return bool(concept_values(concept, lambda s, c: True if (s, c) == (system, code) else None))


def one_value(found: set[T], location: str, what: str) -> T:
    """The single value a set of mapped codes agrees on."""
    if not found:
        raise unmappable(location, "unmapped_code", f"names no {what} in the accepted code systems")
    if len(found) > 1:
        raise unmappable(location, "ambiguous_code", f"codings name more than one {what}")
    return next(iter(found))


def extensions(holder: Any, url: str) -> list[Extension]:
    """The extensions with `url` on a resource or element (any object with .extension)."""
    return [ext for ext in (getattr(holder, "extension", None) or []) if ext.url == url]


def single_extension(holder: Any, url: str, location: str) -> Extension | None:
    found = extensions(holder, url)
    if len(found) > 1:
        raise unmappable(f"{location}.extension", "repeated_extension", f"{url} appears twice")
    return found[0] if found else None


def code_extension(
    holder: Any, url: str, location: str, allowed: Iterable[str], required: bool
) -> str | None:
    ext = single_extension(holder, url, location)
    if ext is None:
        if required:
            raise missing_extension(location, url)
        return None
    allowed = tuple(allowed)
    if ext.valueCode is None or ext.valueCode not in allowed:
        raise unmappable(
            f"{location}.extension",
            "bad_extension",
            f"{url} needs valueCode, one of: " + ", ".join(allowed),
        )
    return ext.valueCode


def bool_extension(holder: Any, url: str, location: str, required: bool) -> bool | None:
    ext = single_extension(holder, url, location)
    if ext is None:
        if required:
            raise missing_extension(location, url)
        return None
    if not isinstance(ext.valueBoolean, bool):
        raise unmappable(f"{location}.extension", "bad_extension", f"{url} needs valueBoolean")
    return ext.valueBoolean


def number_extension(holder: Any, url: str, location: str) -> float | None:
    ext = single_extension(holder, url, location)
    if ext is None:
        return None
    value = ext.valueInteger if ext.valueInteger is not None else ext.valueDecimal
    if value is None:
        raise unmappable(
            f"{location}.extension", "bad_extension", f"{url} needs valueInteger or valueDecimal"
        )
    return float(value)


def millilitres_extension(holder: Any, url: str, location: str) -> float | None:
    ext = single_extension(holder, url, location)
    if ext is None:
        return None
    return millilitres(ext.valueQuantity, f"{location}.extension", url)


def millilitres(quantity: Quantity | None, location: str, what: str) -> float:
    """A volume stated in UCUM millilitres; other units are not converted."""
    if (
        quantity is None
        or quantity.value is None
        or quantity.system != codes.UCUM
        or quantity.code != codes.MILLILITRE
    ):
        raise unmappable(
            location,
            "bad_quantity",
            f"{what} needs valueQuantity with system {codes.UCUM} and code {codes.MILLILITRE}",
        )
    return float(quantity.value)


def missing_extension(location: str, url: str) -> InvalidEvent:
    return unmappable(f"{location}.extension", "missing_extension", f"lacks the extension {url}")


def reject_modifier_extensions(resource: Any, location: str) -> None:
    """FHIR: a modifier extension that is not understood forbids using the resource."""
    if getattr(resource, "modifierExtension", None):
        raise unmappable(
            f"{location}.modifierExtension",
            "unknown_modifier",
            "carries a modifier extension spinewatch does not know; it may change the meaning",
        )


def clinical_time(value: object, location: str) -> datetime:
    """A FHIR dateTime as an aware instant.

    A date without a time stands for 00:00Z of that date, so its UTC
    calendar day is the day written. A year or a month alone (FHIR allows
    both) cannot place anything in days and is rejected.
    """
    if isinstance(value, datetime):
        if value.utcoffset() is None:  # the models refuse these; belt and braces
            raise unmappable(location, "needs_timezone", "a time of day needs a timezone")
        return value
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    if value is None:
        raise unmappable(location, "missing_time", "a date or dateTime is required here")
    raise unmappable(location, "imprecise_time", "needs at least a full date (YYYY-MM-DD)")


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def days_between(start: datetime, end: datetime) -> int:
    """Calendar days from start to end, counted in UTC like the engine's clinical dates."""
    return (utc_day(end) - utc_day(start)).days


class Problems:
    """Collects the defects of one resource, so its reject lists them all at once."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def check(self, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except InvalidEvent as exc:
            self.errors.extend(exc.errors)
            return None

    def raise_any(self) -> None:
        if self.errors:
            raise InvalidEvent(self.errors)
