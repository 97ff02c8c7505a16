"""Literature baselines: the published figures spinewatch compares against."""

from spinewatch.baselines.catalog import comparators, load_catalog, parse_catalog
from spinewatch.baselines.model import (
    BaselineCatalog,
    BaselineEntry,
    BaselineTimepoint,
    Citation,
    Figure,
    UnitOfAnalysis,
)
from spinewatch.baselines.provenance import ProvenanceProblem, verify_catalog

__all__ = [
    "BaselineCatalog",
    "BaselineEntry",
    "BaselineTimepoint",
    "Citation",
    "Figure",
    "ProvenanceProblem",
    "UnitOfAnalysis",
    "comparators",
    "load_catalog",
    "parse_catalog",
    "verify_catalog",
]
