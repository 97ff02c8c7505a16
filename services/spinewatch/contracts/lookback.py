"""The look-back list of a signalled chart: the cases that drove it.

Queensland's VLAD guidance asks the reviewer to "look back from the flag
to the patients". The drift topic names no patient or procedure (it feeds
pagers and the audit log), so the worker publishes this list on a topic
of its own, `{app}-lookback`, read only by the alerting service, which
serves it behind its authenticated API (`GET /alerts/{fingerprint}/cases`).

It carries pseudonymous procedure ids (the same UUIDs the events carry:
never an MRN or a name) and clinical dates only: no patient key, no
operator, no free text.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from spinewatch.contracts.base import ClinicalDate, Contract, SiteId, Uuid
from spinewatch.contracts.drift import Direction
from spinewatch.contracts.vocabulary import Indication, ProcedureType

LOOKBACK_SCHEMA_VERSION = 1
# The newest cases are kept when a chart ran longer than this since its last
# restart; `omitted` counts the older ones (about 260 bytes a case, measured: ~260 KB).
MAX_LOOKBACK_CASES = 1000


class LookbackCase(Contract):
    """One case of the chart, in chart order, with what it added to the CUSUM."""

    procedure_id: Uuid = Field(description="Pseudonymous key of the procedure (never an MRN).")
    performed_on: ClinicalDate = Field(description="Clinical date of the procedure.")
    procedure_type: ProcedureType
    indication: Indication
    case_number: int = Field(ge=1, description="The case's number on this chart.")
    adverse: bool | None = Field(
        default=None, description="Rate charts: the case had the charted outcome."
    )
    vas_change: float | None = Field(
        default=None, description="VAS charts: the case's change in points (- is relief)."
    )
    expected: float = Field(
        description="Rate charts: the stratum's p0; VAS charts: its published mean change."
    )
    statistic: float = Field(ge=0, description="The CUSUM after this case.")
    since_change_point: bool = Field(
        description="True from the estimated change point on: the run that crossed h."
    )


class DriftLookback(Contract):
    """The cases of one signal's run: from the chart's last restart to the signal."""

    event_type: Literal["drift.lookback"]
    schema_version: Literal[1]
    signal_id: UUID = Field(description="The `drift.signalled` this list belongs to.")
    site_id: SiteId
    metric: str
    direction: Direction
    restarted_on: ClinicalDate | None = Field(
        default=None,
        description="Clinical date of the chart's last restart before the signal (its "
        "previous signal, or an operator reset); null: the chart's first case.",
    )
    omitted: int = Field(
        default=0, ge=0, description=f"Older cases left out (at most {MAX_LOOKBACK_CASES} kept)."
    )
    cases: tuple[LookbackCase, ...] = Field(max_length=MAX_LOOKBACK_CASES)
