"""Commands from the alerting service to the workers: chart resets.

A chart is restarted only by closing an investigation of its alert with
that decision (`alerting/`: the API refuses a reset otherwise), and the
reset is a fact for good: the worker folds its charts from the records on
every rebuild, so it must find every reset again. Each is published once,
signed, on `{app}-control` (keyed by site, never compacted away), and every
worker reads the whole topic at start and follows it.

No patient or procedure identifier, and no free text (the investigation's
note stays in the alerting service).
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from spinewatch.contracts.base import ClinicalInstant, Contract, SiteId
from spinewatch.contracts.drift import Direction

CONTROL_SCHEMA_VERSION = 1
# A staff identity or on-call code (the alerting API's users).
USER_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"

# What an investigation found: the documented list a closing must choose from.
Finding = Literal[
    "data_error",
    "case_mix_explained",
    "process_issue_action_taken",
    "no_issue_found",
    "other",
]
FINDINGS: dict[str, str] = {
    "data_error": "data error: the signal came from wrong or missing data",
    "case_mix_explained": "case mix explained: sicker or different patients, not worse care",
    "process_issue_action_taken": "process issue found, with an action taken",
    "no_issue_found": "no issue found on review",
    "other": "other (see the investigation's note)",
}


class ChartReset(Contract):
    """Restart one site's chart at zero, from the first case after `effective_after`."""

    event_type: Literal["chart.reset"]
    schema_version: Literal[1]
    reset_id: UUID = Field(description="Deterministic: the idempotency key of this reset.")
    site_id: SiteId
    metric: str
    direction: Direction
    effective_after: ClinicalInstant = Field(
        description="The chart restarts at zero with the first case performed after this "
        "instant; the cases before it keep their signals and history."
    )
    fingerprint: str = Field(description="The alert whose investigation decided the reset.")
    finding: Finding
    requested_by: str = Field(pattern=USER_PATTERN, description="Who closed the investigation.")
    requested_at: ClinicalInstant = Field(description="When (wall clock).")
