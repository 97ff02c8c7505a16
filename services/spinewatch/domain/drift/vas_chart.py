"""A CUSUM on standardised VAS change: is pain relief smaller than published?

Each patient's change at a timepoint (follow-up VAS minus the same
patient's pre-procedure VAS; negative is relief) is standardised with the
literature's mean and SD, z = (change - mu0) / sd0. Less relief than
published shows as a positive drift in z, so the chart is the upper CUSUM
S = max(0, S + z - k) with reference value k = shift / 2, signalling at h.

Why a CUSUM and not an EWMA: for a specified shift the CUSUM is the optimal
detector (Moustakides 1986), its change-point estimate (the last time S left
zero) is the same as the Bernoulli charts', and on-call staff then read one
kind of chart. An EWMA's advantage, smoothing many small shifts, matters
less at a few dozen patients a month.

ARL by the Brook and Evans (1972) Markov chain: [0, h) split into cells of
width w; state 0 holds S < w / 2 (the atom at zero), state j holds
S in [(j - 1/2) w, (j + 1/2) w); transition probabilities from the normal
CDF. The tests hold it against Monte-Carlo.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from spinewatch.errors import ChartDesignError

if TYPE_CHECKING:
    import numpy as np

# numpy and SciPy are imported where an ARL is solved or a chart simulated:
# a worker whose designs are cached never does either (see arl.py).

DEFAULT_CELLS = 400


def standardised(change: float, mean0: float, sd0: float) -> float:
    if sd0 <= 0:
        raise ChartDesignError(f"baseline SD must be positive, got {sd0}")
    return (change - mean0) / sd0


@dataclass(frozen=True, slots=True)
class VasSignal:
    case_index: int
    statistic: float
    change_point: int
    cases_since_change: int


@dataclass(frozen=True, slots=True)
class VasChartState:
    reference: float  # k, in SD units: half the shift to detect
    limit: float  # h
    statistic: float = 0.0
    cases: int = 0
    left_zero_at: int = 0
    signals: tuple[VasSignal, ...] = ()


def new_vas_chart(shift_sd: float, limit: float) -> VasChartState:
    if shift_sd <= 0 or limit <= 0:
        raise ChartDesignError(f"shift ({shift_sd}) and limit ({limit}) must be positive")
    return VasChartState(reference=shift_sd / 2.0, limit=limit)


def observe_change(state: VasChartState, z: float) -> VasChartState:
    """The chart after one patient's standardised change."""
    index = state.cases
    left_zero_at = index if state.statistic == 0.0 else state.left_zero_at
    statistic = max(0.0, state.statistic + z - state.reference)
    if statistic < state.limit:
        return replace(state, statistic=statistic, cases=index + 1, left_zero_at=left_zero_at)
    signal = VasSignal(index, statistic, left_zero_at, index - left_zero_at + 1)
    return replace(
        state,
        statistic=0.0,
        cases=index + 1,
        left_zero_at=index + 1,
        signals=(*state.signals, signal),
    )


def vas_arl(
    reference: float, limit: float, mean_shift: float = 0.0, cells: int = DEFAULT_CELLS
) -> float:
    """Average run length from zero when z ~ N(mean_shift, 1)."""
    import numpy as np  # noqa: PLC0415
    from scipy import stats  # noqa: PLC0415

    width = limit / (cells - 0.5)
    values = np.arange(cells) * width
    upper_edges = (np.arange(cells) + 0.5) * width  # state j ends at (j + 1/2) w
    # P(S' <= x | S = s) = Phi(x - s + k - mu)
    below = stats.norm.cdf(upper_edges[None, :] - values[:, None] + reference - mean_shift)
    q = np.diff(np.concatenate([np.zeros((cells, 1)), below], axis=1), axis=1)
    lengths = np.linalg.solve(np.eye(cells) - q, np.ones(cells))
    return float(lengths[0])


@dataclass(frozen=True, slots=True)
class VasChartDesign:
    shift_sd: float
    reference: float
    limit: float
    arl0: float
    arl1: float


def calibrate_vas(
    shift_sd: float, target_arl0: float, cells: int = DEFAULT_CELLS
) -> VasChartDesign:
    """The limit h whose in-control ARL meets the target (to 0.1%)."""
    if target_arl0 <= 1:
        raise ChartDesignError(f"target ARL0 must exceed 1 case, got {target_arl0}")
    reference = shift_sd / 2.0
    low, high = 0.0, 1.0
    while vas_arl(reference, high, cells=cells) < target_arl0:
        low, high = high, high * 2
    while (high - low) > 1e-3 * high:
        middle = (low + high) / 2
        if vas_arl(reference, middle, cells=cells) >= target_arl0:
            high = middle
        else:
            low = middle
    return VasChartDesign(
        shift_sd,
        reference,
        high,
        vas_arl(reference, high, cells=cells),
        vas_arl(reference, high, mean_shift=shift_sd, cells=cells),
    )


def simulate_vas_run_lengths(
    reference: float, limit: float, *, mean_shift: float = 0.0, runs: int, seed: int
) -> np.ndarray:
    """Cases until the continuous chart signals, for seeded N(mean_shift, 1) streams."""
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    statistic = np.zeros(runs)
    lengths = np.zeros(runs, dtype=np.int64)
    active = np.ones(runs, dtype=bool)
    case = 0
    while active.any():
        case += 1
        n = int(active.sum())
        statistic[active] = np.maximum(
            0.0, statistic[active] + rng.normal(mean_shift, 1.0, n) - reference
        )
        crossed = active & (statistic >= limit)
        lengths[crossed] = case
        active &= ~crossed
        if case > 10_000_000:  # pragma: no cover - a limit this high is a caller error
            raise ChartDesignError("simulation did not end")
    return lengths
