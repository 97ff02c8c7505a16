"""Loading the bundled baseline catalog and finding the comparator for a cohort."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib.resources import files

from pydantic import ValidationError

from spinewatch.baselines.model import BaselineCatalog, BaselineEntry, BaselineTimepoint, Figure
from spinewatch.errors import CatalogError

CATALOG_RESOURCE = "catalog.toml"


def parse_catalog(text: str) -> BaselineCatalog:
    try:
        return BaselineCatalog.model_validate(tomllib.loads(text), strict=False)
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise CatalogError(f"baseline catalog is invalid: {exc}") from exc


@cache
def load_catalog() -> BaselineCatalog:
    """The catalog shipped with this package (validated once, then cached)."""
    text = files("spinewatch.baselines").joinpath(CATALOG_RESOURCE).read_text(encoding="utf-8")
    return parse_catalog(text)


def comparators(
    catalog: BaselineCatalog,
    metric: str,
    procedure: str,
    indication: str,
) -> list[BaselineEntry]:
    """Outcome entries for a metric and cohort, preferred ones first."""
    return list(_outcome_index(catalog).get((metric, procedure, indication), ()))


CohortIndex = dict[tuple[str, str, str], tuple[BaselineEntry, ...]]

# A /metrics scrape asks for comparators once per report row (thousands):
# scanning the catalog each time was ~40% of a scrape. The catalog is
# immutable, so each one is indexed once. Keyed by id() with the catalog
# itself kept in the value, so an id cannot be reused while cached.
_INDEXES: dict[int, tuple[BaselineCatalog, CohortIndex]] = {}
_INDEXES_KEPT = 8


def _outcome_index(catalog: BaselineCatalog) -> CohortIndex:
    cached = _INDEXES.get(id(catalog))
    if cached is not None and cached[0] is catalog:
        return cached[1]
    grouped: dict[tuple[str, str, str], list[BaselineEntry]] = {}
    for entry in catalog.baselines:
        if entry.figure is Figure.OUTCOME:
            key = (entry.metric, entry.procedure, entry.indication)
            grouped.setdefault(key, []).append(entry)
    index = {key: tuple(sorted(entries, key=_comparator_order)) for key, entries in grouped.items()}
    if len(_INDEXES) >= _INDEXES_KEPT:
        del _INDEXES[next(iter(_INDEXES))]
    _INDEXES[id(catalog)] = (catalog, index)
    return index


_TIMEPOINT_ORDER = {timepoint: rank for rank, timepoint in enumerate(BaselineTimepoint)}


def _comparator_order(entry: BaselineEntry) -> tuple[bool, int, str]:
    """Preferred first, then in clinical time order (pre -> post -> final)."""
    rank = _TIMEPOINT_ORDER[entry.timepoint] if entry.timepoint else len(_TIMEPOINT_ORDER)
    return (not entry.preferred, rank, entry.id)
