"""What a synthetic site is: its profile, and the shape of one event.

Kept apart from `cohort` (which generates) and `events` (which builds one
site's events) so that both import it and neither imports the other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spinewatch.contracts import Indication, ProcedureType

Event = dict[str, Any]
CaseMix = Mapping[tuple[ProcedureType, Indication], float]
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,31}$")


@dataclass(frozen=True)
class SiteProfile:
    """One treating site: its volume, case mix and (optionally) a leakage drift."""

    site_id: str
    procedures: int  # how many index procedures
    case_mix: CaseMix  # relative weights of (procedure, indication)
    operators: int = 3
    leakage_odds_ratio: float = 1.0  # multiplies the baseline odds of leakage per level
    drift_after: int | None = None  # odds ratio applies from this procedure index on
    drift_until: int | None = None  # ... and before this one (None: to the end)

    def __post_init__(self) -> None:
        if not _SLUG.match(self.site_id):
            raise ValueError(f"site_id {self.site_id!r} is not a slug")
        if self.procedures < 0 or self.operators < 1 or self.leakage_odds_ratio <= 0:
            raise ValueError("need procedures >= 0, operators >= 1, leakage_odds_ratio > 0")
        if min(self.case_mix.values(), default=-1) < 0 or sum(self.case_mix.values()) <= 0:
            raise ValueError("case_mix needs non-negative weights with a positive sum")
