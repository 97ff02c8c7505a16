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

from spinewatch.contracts.base import ClinicalDate, ClinicalInstant, Contract, SiteId
from spinewatch.contracts.vocabulary import FollowupTimepoint, Indication, ProcedureType

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
    citation: str | None = Field(
        default=None,
        description="Author or series, year and seed of the figure, with the quoted words "
        "(e.g. 'Weill 1996 (ref. 12), in Barbanti Bròdano et al., review (seed 003), ...').",
    )
    arl0_cases: float = Field(gt=0, description="At this limit, for this stratum alone.")
    arl1_cases: float = Field(gt=0, description="At this limit, for this stratum alone.")


class LocalTarget(Contract):
    """A chart tested against a site's own setting, not a literature figure.

    The follow-up completeness chart: the seeds give no completeness figure,
    so its baseline is the expected completeness the deployment sets.
    """

    setting: str = Field(description="The setting that holds the target.")
    expected: float = Field(gt=0, lt=1, description="The target proportion (e.g. completeness).")
    p0: float = Field(gt=0, lt=1, description="Expected probability of the adverse outcome.")
    described: str


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
    local_target: LocalTarget | None = Field(
        default=None,
        description="Charts against a local setting (no literature figure): the target.",
    )
    pessimistic_mean_change: float | None = Field(
        default=None,
        description="VAS charts: the mean change over the same window with every lost "
        "follow-up counted as no relief (change 0).",
    )
    holds_under_pessimistic: bool | None = Field(
        default=None,
        description="VAS charts: the window's mean standardised change still exceeds half "
        "the designed shift when lost follow-ups count as no relief.",
    )


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
    """A sentinel event: a catastrophic complication, paged on every case.

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


class DriftSilence(Contract):
    """A site's event stream went silent, or came back (`domain/drift/silence.py`).

    Judged in wall-clock arrival time at the worker that owns the site: a
    silent site sends nothing, so clinical time cannot tell. Names the site
    and arrival instants, never a patient or a procedure.
    """

    event_type: Literal["drift.silence"]
    schema_version: Literal[1]
    silence_id: UUID = Field(
        description="Deterministic id of the silence episode: a UUIDv5 of the site and the "
        "arrival instant of its last event before the silence. With `status`, the "
        "idempotency key of this message."
    )
    status: Literal["silent", "resumed"]
    site_id: SiteId
    last_event_at: ClinicalInstant | None = Field(
        default=None,
        description="Wall-clock instant the worker received the site's last event before "
        "the silence; null on a resumption the worker did not see begin (it restarted, "
        "or took the site over from another worker).",
    )
    resumed_at: ClinicalInstant | None = Field(
        default=None, description="resumed: wall-clock instant the site's events came back."
    )
    usual_gap_s: float | None = Field(
        default=None, gt=0, description="Mean seconds between the site's arrivals, as judged."
    )
    threshold_s: float | None = Field(
        default=None,
        gt=0,
        description="Silent after this long: max(multiple x usual gap, the floor).",
    )
    multiple: float = Field(gt=0, description="The configured multiple of the usual gap.")
    arrivals: int = Field(ge=0, description="Arrivals the usual gap was estimated from.")


WithdrawalReason = Literal["retracted", "procedure_voided", "procedure_corrected"]


class DriftSentinelWithdrawn(Contract):
    """A paged sentinel event whose cause is gone: the page is withdrawn.

    `retracted`: every report of the complication that paged was retracted
    (or replaced by a new report, which pages under a new sentinel id);
    `procedure_voided`: every version of the index procedure was retracted;
    `procedure_corrected`: a correction moved the procedure to another site.
    """

    event_type: Literal["drift.sentinel_withdrawn"]
    schema_version: Literal[1]
    withdrawal_id: UUID = Field(
        description="Deterministic: the idempotency key of this withdrawal."
    )
    sentinel_id: UUID = Field(description="The `drift.sentinel` whose page is withdrawn.")
    site_id: SiteId
    metric: str = Field(description="The rate the event counted in, e.g. death_rate.")
    reason: WithdrawalReason


class TimepointCompleteness(Contract):
    """One scheduled timepoint of a site, as of the report's date."""

    timepoint: FollowupTimepoint
    pending: int = Field(ge=0, description="Window not open yet.")
    due: int = Field(ge=0, description="Window (or its grace) open, not received.")
    received: int = Field(ge=0, description="Received within window and grace.")
    received_late: int = Field(ge=0, description="Received after window and grace closed.")
    overdue: int = Field(ge=0, description="Window and grace closed, not received.")
    lost: int = Field(ge=0, description="Past the lost limit, not received.")
    censored: int = Field(ge=0, description="Not received; the patient died.")
    closed: int = Field(ge=0, description="Window and grace closed: the denominator.")
    completeness: float | None = Field(
        default=None, ge=0, le=1, description="Received (on time or late) / closed."
    )
    clarks_c: float | None = Field(
        default=None, ge=0, le=1, description="Clark's C: observed / potential follow-up time."
    )


class DriftCompleteness(Contract):
    """A site's follow-up completeness per scheduled timepoint, as of a clinical date.

    Informational (never paged): the completeness chart's signals are
    `drift.signalled` messages. Counts only, never an identifier.
    """

    event_type: Literal["drift.completeness"]
    schema_version: Literal[1]
    report_id: UUID = Field(description="Deterministic: site and as-of date.")
    site_id: SiteId
    as_of: ClinicalDate = Field(description=f"The clinical date counted up to{_IN}.")
    expected_completeness: float = Field(gt=0, lt=1, description="The local target setting.")
    timepoints: tuple[TimepointCompleteness, ...]


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


# Every message of the drift topic: the engine writes them, the alerting
# service reads them (it pages on some, records the informational ones).
DriftMessage = (
    DriftSignalled
    | DriftInControl
    | DriftSentinel
    | DriftSentinelWithdrawn
    | DriftSilence
    | DriftCompleteness
    | DriftRedesigned
)
