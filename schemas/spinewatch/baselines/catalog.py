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
    found = [
        entry
        for entry in catalog.baselines
        if entry.figure is Figure.OUTCOME
        and entry.metric == metric
        and entry.procedure == procedure
        and entry.indication == indication
    ]
    return sorted(found, key=_comparator_order)


_TIMEPOINT_ORDER = {timepoint: rank for rank, timepoint in enumerate(BaselineTimepoint)}


def _comparator_order(entry: BaselineEntry) -> tuple[bool, int, str]:
    """Preferred first, then in clinical time order (pre -> post -> final)."""
    rank = _TIMEPOINT_ORDER[entry.timepoint] if entry.timepoint else len(_TIMEPOINT_ORDER)
    return (not entry.preferred, rank, entry.id)
