"""What the engine publishes on the drift topic: chart signals and their resolution.

Outbound contracts, read by the alerting service. They describe a cohort
(a site, across the strata its chart weighs), never a patient: no patient
or procedure identifier appears, only counts, dates of the cases that
mark the episode, and the literature figures the chart tested against.

Ids are deterministic (a UUIDv5 of what the signal is), so the same signal
re-derived after a restart or a rebalance carries the same id, and a
consumer that remembers ids pages once however often it is delivered.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field

from spinewatch.contracts.base import ClinicalDate, Contract, SiteId
from spinewatch.contracts.vocabulary import Indication, ProcedureType

DRIFT_SCHEMA_VERSION = 1

# Dates are the UTC dates of contract-valid clinical instants (envelope).
_IN = "; a UTC date in [1984-01-01, 2100-01-01)"

Direction = Literal["worse", "better"]
Unit = Literal["treated_level", "patient"]


class StratumBaseline(Contract):
    """One stratum the chart weighed cases by, with its literature figure."""

    procedure_type: ProcedureType
    indication: Indication
    cases: int = Field(ge=0, description="Cases of this stratum from the change point on.")
    p0: float | None = Field(
        default=None, gt=0, lt=1, description="Rate charts: expected probability per case."
    )
    p0_basis: Literal["published value", "upper bound of the published range"] | None = None
    mean_change: float | None = Field(
        default=None, description="VAS charts: published mean change in points (- is relief)."
    )
    sd_change: float | None = Field(default=None, gt=0, description="VAS charts: its SD.")
    baseline_id: str
    described: str
    seed: str
    locator: str
    quote: str
    exact_cohort: bool = Field(description="False: a broader published group stands in.")
    arl0_cases: float = Field(gt=0, description="At this limit, for this stratum alone.")
    arl1_cases: float = Field(gt=0, description="At this limit, for this stratum alone.")


class DriftSignalled(Contract):
    event_type: Literal["drift.signalled"]
    schema_version: Literal[1]
    signal_id: UUID = Field(description="Deterministic: the idempotency key of this signal.")
    site_id: SiteId
    metric: str
    unit: Unit
    direction: Direction
    odds_ratio: float | None = Field(
        default=None, gt=0, description="Rate charts: the odds shift designed for."
    )
    shift_sd: float | None = Field(
        default=None, gt=0, description="VAS charts: the loss of relief designed for, in SD."
    )
    statistic: float = Field(ge=0, description="CUSUM statistic when it crossed the limit.")
    limit: float = Field(gt=0, description="Control limit h.")
    arl0_cases: float = Field(gt=0, description="Cases between false alarms, as designed.")
    arl1_cases: float = Field(gt=0, description="Cases to detect the shift, as designed.")
    case_number: int = Field(ge=1, description="The signalling case, counted on this chart.")
    signalled_on: ClinicalDate = Field(description=f"Clinical date of the signalling case{_IN}.")
    change_point_case_number: int = Field(ge=1)
    change_point_on: ClinicalDate = Field(
        description=f"Estimated start: the CUSUM last left zero{_IN}."
    )
    cases_since_change: int = Field(ge=1)
    observed_events: int | None = Field(
        default=None, ge=0, description="Rate charts: adverse outcomes since the change point."
    )
    expected_events: float | None = Field(
        default=None, ge=0, description="Rate charts: expected at the baselines, same cases."
    )
    observed_mean_change: float | None = Field(
        default=None, description="VAS charts: mean change since the change point, in points."
    )
    expected_mean_change: float | None = Field(
        default=None, description="VAS charts: published mean change for the same cases."
    )
    baselines: tuple[StratumBaseline, ...]


class DriftInControl(Contract):
    """The chart ran `cases_since_signal` cases without a new signal after its last one."""

    event_type: Literal["drift.in_control"]
    schema_version: Literal[1]
    signal_id: UUID = Field(description="The last signal of the episode that ended.")
    site_id: SiteId
    metric: str
    direction: Direction
    cases_since_signal: int = Field(ge=1)
    in_control_on: ClinicalDate = Field(
        description=f"Clinical date of the case that closed it{_IN}."
    )


class DriftSentinel(Contract):
    """A sentinel event: a complication the seeds' series report none of, paged on every case.

    One per (procedure, category), with a deterministic id; it names the
    cohort and the clinical date, never the patient or the procedure.
    """

    event_type: Literal["drift.sentinel"]
    schema_version: Literal[1]
    sentinel_id: UUID = Field(description="Deterministic: the idempotency key of this event.")
    site_id: SiteId
    metric: str = Field(description="The rate the event counts in, e.g. death_rate.")
    procedure_type: ProcedureType
    indication: Indication
    occurred_on: ClinicalDate = Field(description=f"Clinical date of the index procedure{_IN}.")


class StratumShare(Contract):
    """One stratum's share of the cases a chart was designed for."""

    procedure_type: ProcedureType
    indication: Indication
    share: float = Field(gt=0, le=1, description="Quantised to 0.05.")


class DriftRedesigned(Contract):
    """A site's chart took a new limit: its volume or case mix moved past the margin.

    Informational (nothing is paged): it records why the chart's h, and so
    its signal ids, changed. After it, the worker re-announces only the
    chart's latest episode, so history is not paged again.
    """

    event_type: Literal["drift.redesigned"]
    schema_version: Literal[1]
    redesign_id: UUID = Field(description="Deterministic: site, chart, old and new design.")
    site_id: SiteId
    metric: str
    direction: Direction
    provisional: bool = Field(
        description="True: too little history for the site's own mix; designed per stratum "
        "at a default volume."
    )
    previous_limit: float | None = Field(
        default=None, gt=0, description="h before; none for the site's first design here."
    )
    limit: float = Field(gt=0, description="Control limit h now.")
    arl0_cases: float = Field(gt=0, description="Cases between false alarms, at this mix.")
    arl1_cases: float = Field(gt=0, description="Cases to detect the designed shift.")
    arl0_months: float = Field(gt=0, description="The same at the designed volume, in months.")
    arl1_months: float = Field(gt=0)
    budget_months: float = Field(gt=0, description="The false-alarm budget designed for.")
    volume_per_month: float = Field(gt=0, description="Cases on this chart a month (quantised).")
    mix: tuple[StratumShare, ...] = Field(description="Rate charts: the case mix designed for.")
    designed_on: ClinicalDate = Field(description=f"Clinical date of the measurement{_IN}.")
