"""Drift-topic messages derived from a site's charts: signals and returns to control.

Every message has a deterministic id: a UUIDv5 of the site, the chart and
the signalling case. Charts are rebuilt from the records after a restart,
so the same signal gets the same id, and the alerting service pages once.
Building a message is the costly part, so callers ask for the ids first
(`pending`) and build only the messages not yet published.

The signalling case's procedure id goes into the hash and nowhere else:
the message names cases by their number on the chart and their date.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from spinewatch.contracts.drift import (
    DriftInControl,
    DriftMessage,
    DriftRedesigned,
    DriftSentinel,
    DriftSentinelWithdrawn,
    DriftSignalled,
    StratumBaseline,
    StratumShare,
)
from spinewatch.contracts.vocabulary import Indication, ProcedureType
from spinewatch.domain.drift.cusum import Signal
from spinewatch.domain.drift.design import MonitoredChart, Outcome, Stratum
from spinewatch.domain.drift.site_charts import (
    AnyChart,
    CaseKey,
    SentinelCase,
    SentinelWithdrawal,
    SignalAt,
    SiteCharts,
    Track,
)
from spinewatch.domain.drift.site_design import SiteChartPlan, stratum_run_lengths
from spinewatch.domain.drift.vas_drift import MonitoredVasChart
from spinewatch.domain.outcomes.baseline_match import BaselineMatch, cite

_NAMESPACE = UUID("6c1f0a52-9d0e-4a52-9a0b-2f5e7c3d9b41")


@dataclass(frozen=True, slots=True)
class Pending:
    """A message a site's charts imply, by id, with what is needed to build it."""

    message_id: UUID
    site_id: str
    chart_index: int
    signal: SignalAt
    resolved: bool  # True: the return to control after `signal`


def signal_id(site_id: str, chart: AnyChart, signal: SignalAt) -> UUID:
    at_us, procedure_id = signal.at
    return uuid5(
        _NAMESPACE, f"{site_id}|{chart.name}|{chart.design.limit!r}|{at_us}|{procedure_id.hex()}"
    )


def in_control_id(signal: UUID) -> UUID:
    return uuid5(signal, "in_control")


def pending(site_id: str, charts: SiteCharts, resolve_after: int) -> Iterator[Pending]:
    """Every message the site's charts imply now: each signal, and each episode's end."""
    for index, (chart, track) in enumerate(zip(charts.charts, charts.tracks, strict=True)):
        for signal in track.signals:
            sid = signal_id(site_id, chart, signal)
            yield Pending(sid, site_id, index, signal, resolved=False)
        if track.signals and track.in_control(resolve_after):
            last = track.signals[-1]
            sid = signal_id(site_id, chart, last)
            yield Pending(in_control_id(sid), site_id, index, last, resolved=True)


def latest_only(items: list[Pending]) -> list[Pending]:
    """Per chart, the last signal and its resolution: what a rebuilt worker re-announces.

    A worker that takes over partitions does not know what the previous
    owner published; re-announcing each chart's current episode is enough
    for the alerting service (ids dedupe it), without replaying history.
    """
    last: dict[tuple[str, int], UUID] = {}
    for item in items:
        if not item.resolved:
            last[(item.site_id, item.chart_index)] = item.message_id
    keep = set(last.values()) | {in_control_id(sid) for sid in last.values()}
    return [item for item in items if item.message_id in keep]


def build(item: Pending, charts: SiteCharts) -> DriftMessage:
    chart = charts.charts[item.chart_index]
    track = charts.tracks[item.chart_index]
    if item.resolved:
        return _in_control(item, chart, track)
    signal = item.signal.signal
    common = {
        "event_type": "drift.signalled",
        "schema_version": 1,
        "signal_id": item.message_id,
        "site_id": item.site_id,
        "metric": chart.metric_name,
        "unit": chart.unit,
        "direction": chart.direction,
        "statistic": signal.statistic,
        "limit": chart.design.limit,
        "arl0_cases": chart.design.arl0,
        "arl1_cases": chart.design.arl1,
        "case_number": signal.case_index + 1,
        "signalled_on": clinical_date(item.signal.at),
        "change_point_case_number": signal.change_point + 1,
        "change_point_on": clinical_date(item.signal.change_at),
        "cases_since_change": signal.cases_since_change,
    }
    window = charts.window(item.chart_index, item.signal.change_at, item.signal.at)
    if isinstance(chart, MonitoredVasChart):
        return DriftSignalled(**common, **_vas_details(chart, window))
    if not isinstance(signal, Signal):
        raise TypeError("a rate chart raised a VAS signal")
    return DriftSignalled(**common, **_rate_details(chart, signal, window))


def _rate_details(
    chart: MonitoredChart, signal: Signal, window: list[tuple[Stratum, Outcome]]
) -> dict[str, Any]:
    baselines = []
    for stratum, cases in sorted(Counter(stratum for stratum, _ in window).items()):
        risk = chart.strata[stratum]
        # A site's design computes its planned strata's run lengths; a stratum
        # seen only outside its design window is computed here (cached).
        lengths = chart.run_lengths.get(stratum)
        if lengths is None:
            lengths = stratum_run_lengths(risk.p0, chart.design.odds_ratio, chart.design.limit)
        arl0, arl1 = lengths
        baselines.append(
            _stratum(stratum, cases, risk.baseline, arl0, arl1, p0=risk.p0, p0_basis=risk.basis)
        )
    return {
        "odds_ratio": chart.design.odds_ratio,
        "observed_events": signal.observed_events,
        "expected_events": signal.expected_events,
        "baselines": tuple(baselines),
    }


def _vas_details(chart: MonitoredVasChart, window: list[tuple[Stratum, Outcome]]) -> dict[str, Any]:
    changes = [float(outcome) for _, outcome in window if isinstance(outcome, float)]
    expected = [chart.strata[stratum].mean_change for stratum, _ in window]
    baselines = []
    design = chart.design
    for stratum, cases in sorted(Counter(stratum for stratum, _ in window).items()):
        published = chart.strata[stratum]
        baselines.append(
            _stratum(
                stratum,
                cases,
                published.follow_up,
                design.arl0,
                design.arl1,
                mean_change=published.mean_change,
                sd_change=published.sd_change,
            )
        )
    return {
        "shift_sd": design.shift_sd,
        "observed_mean_change": sum(changes) / len(changes) if changes else None,
        "expected_mean_change": sum(expected) / len(expected) if expected else None,
        "baselines": tuple(baselines),
    }


def _stratum(
    stratum: Stratum,
    cases: int,
    baseline: BaselineMatch,
    arl0: float,
    arl1: float,
    **figures: Any,
) -> StratumBaseline:
    procedure, indication = stratum
    source = baseline.source
    return StratumBaseline(
        procedure_type=ProcedureType(procedure),
        indication=Indication(indication),
        cases=cases,
        baseline_id=baseline.entry_id or "practice_rule",
        described=baseline.described,
        seed=source.seed,
        locator=source.locator,
        quote=source.quote,
        exact_cohort=baseline.exact_cohort,
        citation=cite(baseline),
        arl0_cases=arl0,
        arl1_cases=arl1,
        **figures,
    )


def _in_control(item: Pending, chart: AnyChart, track: Track) -> DriftInControl:
    since = track.cases_since_signal() or 1
    on = clinical_date(track.last_at or item.signal.at)
    restart = track.restart_after(item.signal)
    if restart is not None:
        # An operator reset ended the episode: the cases up to it, and its date
        # (the first reset after the signal: the same message on every refold).
        since = max(1, restart.case_index - item.signal.signal.case_index)
        on = clinical_date((restart.reset_at_us, b""))
    return DriftInControl(
        event_type="drift.in_control",
        schema_version=1,
        signal_id=signal_id(item.site_id, chart, item.signal),
        site_id=item.site_id,
        metric=chart.metric_name,
        direction=chart.direction,
        cases_since_signal=since,
        in_control_on=on,
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def clinical_date(key: CaseKey) -> date:
    """The UTC date of a case's clinical time (epoch microseconds).

    Integer arithmetic, like `facts._micros`: a float of the seconds keeps
    microseconds only while it is small, and the envelope's date range
    (contracts.base.CLINICAL_EPOCH) keeps the result inside `datetime`.
    """
    return (_EPOCH + timedelta(microseconds=key[0])).date()


def sentinel_id(site_id: str, category: str, procedure_id: bytes, generation: int) -> UUID:
    """Generation 0 keeps the id sentinels had before withdrawals existed."""
    key = f"{site_id}|{category}|{procedure_id.hex()}"
    return uuid5(_NAMESPACE, key if generation == 0 else f"{key}|{generation}")


def sentinel_message(
    case: SentinelCase | SentinelWithdrawal,
) -> DriftSentinel | DriftSentinelWithdrawn:
    """The drift-topic message for one sentinel event or withdrawal (same id however
    often found)."""
    if isinstance(case, SentinelWithdrawal):
        return withdrawal_message(case)
    procedure, indication = case.stratum
    return DriftSentinel(
        event_type="drift.sentinel",
        schema_version=1,
        sentinel_id=sentinel_id(case.site_id, case.category, case.procedure_id, case.generation),
        site_id=case.site_id,
        metric=f"{case.category}_rate",
        procedure_type=ProcedureType(procedure),
        indication=Indication(indication),
        occurred_on=clinical_date((case.occurred_at_us, case.procedure_id)),
    )


def withdrawal_message(withdrawal: SentinelWithdrawal) -> DriftSentinelWithdrawn:
    withdrawn = sentinel_id(
        withdrawal.site_id, withdrawal.category, withdrawal.procedure_id, withdrawal.generation
    )
    # A retraction is for good: one withdrawal per sentinel. A void or a move
    # can be undone (the sentinel then pages again), and redone: its id says
    # how many procedure versions were retracted by then.
    detail: str = withdrawal.reason
    if withdrawal.reason != "retracted":
        detail += f"|{withdrawal.voided_versions}"
    return DriftSentinelWithdrawn(
        event_type="drift.sentinel_withdrawn",
        schema_version=1,
        withdrawal_id=uuid5(withdrawn, f"withdrawn|{detail}"),
        sentinel_id=withdrawn,
        site_id=withdrawal.site_id,
        metric=f"{withdrawal.category}_rate",
        reason=withdrawal.reason,
    )


def redesign_message(
    site_id: str, chart: AnyChart, plan: SiteChartPlan, previous_limit: float | None
) -> DriftRedesigned:
    """The drift-topic record of a site's chart taking a new design (never paged)."""
    design = chart.design
    key = f"{site_id}|{chart.name}|{plan.key.as_text()}|{previous_limit!r}|{design.limit!r}"
    volume = plan.volume_per_month
    return DriftRedesigned(
        event_type="drift.redesigned",
        schema_version=1,
        redesign_id=uuid5(_NAMESPACE, key),
        site_id=site_id,
        metric=chart.metric_name,
        direction=chart.direction,
        provisional=plan.provisional,
        previous_limit=previous_limit,
        limit=design.limit,
        arl0_cases=design.arl0,
        arl1_cases=design.arl1,
        arl0_months=design.arl0 / volume,
        arl1_months=design.arl1 / volume,
        budget_months=plan.arl0_months,
        volume_per_month=volume,
        mix=tuple(
            StratumShare(
                procedure_type=ProcedureType(procedure),
                indication=Indication(indication),
                share=share,
            )
            for (procedure, indication), share in plan.shares
        ),
        designed_on=clinical_date((plan.as_of_us, b"")),
    )
