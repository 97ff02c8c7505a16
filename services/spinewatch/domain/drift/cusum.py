"""Risk-adjusted Bernoulli CUSUM and VLAD: the sequential charts for adverse outcomes.

Steiner, Cook, Farewell and Treasure (2000): each case brings its own
expected probability p (from the catalog stratum that fits it), and the
chart tests "odds as expected" against "odds multiplied by R". The
log-likelihood-ratio weight of a case with outcome y is

    W = y * log(R) - log(1 - p + R * p)

so a case with a high expected risk earns little for an adverse outcome and
loses little for a good one: a site that treats sicker patients is not
flagged for having more complications. The upper chart (R > 1) detects
deterioration, the lower chart (R < 1) improvement; both accumulate
S = max(0, S + W) and signal when S reaches the control limit h.

A unit of several trials (a procedure with k treated levels, for leakage
per level) enters as one step whose weight is the sum of its trials'
weights: events * log(R) - trials * log(1 - p + R * p).

Everything here is pure: a chart's state is a value, and `observe` returns
the next one, so the engine can rebuild a chart exactly from its cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from spinewatch.errors import ChartDesignError


def llr_weight(events: int, trials: int, p: float, odds_ratio: float) -> float:
    """Log-likelihood ratio of `events` adverse outcomes in `trials` at expected risk p."""
    if not 0.0 < p < 1.0:
        raise ChartDesignError(f"expected probability must lie in (0, 1), got {p}")
    if odds_ratio <= 0 or odds_ratio == 1:
        raise ChartDesignError(f"odds ratio must be positive and not 1, got {odds_ratio}")
    if not 0 <= events <= trials:
        raise ChartDesignError(f"events ({events}) must lie in 0..trials ({trials})")
    return events * math.log(odds_ratio) - trials * math.log(1.0 - p + odds_ratio * p)


@dataclass(frozen=True, slots=True)
class Signal:
    """The chart crossed its limit: what on-call staff and the audit log need."""

    case_index: int  # 0-based index of the case that crossed the limit
    statistic: float
    limit: float
    change_point: int  # first case after the chart last stood at zero
    cases_since_change: int
    observed_events: int  # since the change point, inclusive
    expected_events: float


@dataclass(frozen=True, slots=True)
class ChartState:
    """One chart after some cases; reset to zero after every signal."""

    odds_ratio: float
    limit: float
    statistic: float = 0.0
    cases: int = 0
    # Index of the first case after the statistic last stood at zero: the
    # estimated change point (the last time the CUSUM left zero).
    left_zero_at: int = 0
    events_since_zero: int = 0
    expected_since_zero: float = 0.0
    vlad: float = 0.0  # cumulative expected minus observed adverse outcomes
    signals: tuple[Signal, ...] = field(default=())

    @property
    def signalling(self) -> bool:
        """True right after a signal, until the next case."""
        return bool(self.signals) and self.signals[-1].case_index == self.cases - 1


def new_chart(odds_ratio: float, limit: float) -> ChartState:
    if limit <= 0:
        raise ChartDesignError(f"control limit must be positive, got {limit}")
    llr_weight(0, 1, 0.5, odds_ratio)  # validates the odds ratio
    return ChartState(odds_ratio=odds_ratio, limit=limit)


def observe(state: ChartState, events: int, trials: int, p: float) -> ChartState:
    """The chart after one case (or one unit of `trials` trials)."""
    weight = llr_weight(events, trials, p, state.odds_ratio)
    return observe_weighted(state, weight, events, trials * p)


def observe_weighted(state: ChartState, weight: float, events: int, expected: float) -> ChartState:
    """`observe` with the case's weight already computed (a chart folding many cases
    precomputes each stratum's log terms; the arithmetic is the same)."""
    index = state.cases
    statistic = state.statistic + weight
    statistic = max(statistic, 0.0)
    vlad = state.vlad + expected - events
    if state.statistic == 0.0:
        # The statistic leaves zero (or stays there) with this case.
        left_zero_at, events_since, expected_since = index, events, expected
    else:
        left_zero_at = state.left_zero_at
        events_since = state.events_since_zero + events
        expected_since = state.expected_since_zero + expected
    if statistic < state.limit:
        # The constructor, not dataclasses.replace: this runs once per case
        # per chart on every refold, and replace() costs several times more.
        return ChartState(
            state.odds_ratio,
            state.limit,
            statistic,
            index + 1,
            left_zero_at,
            events_since,
            expected_since,
            vlad,
            state.signals,
        )
    signal = Signal(
        case_index=index,
        statistic=statistic,
        limit=state.limit,
        change_point=left_zero_at,
        cases_since_change=index - left_zero_at + 1,
        observed_events=events_since,
        expected_events=expected_since,
    )
    # Reset after a signal (recorded in `signals`), so a persisting shift
    # signals again rather than the chart staying above its limit forever.
    return ChartState(
        state.odds_ratio,
        state.limit,
        0.0,
        index + 1,
        index + 1,
        0,
        0.0,
        vlad,
        (*state.signals, signal),
    )
