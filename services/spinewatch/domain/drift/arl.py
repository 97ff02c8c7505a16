"""Average run lengths of Bernoulli CUSUM charts, and the control limit for a target.

The in-control average run length (ARL0: cases until a false alarm) and the
out-of-control one (ARL1: cases until a real shift of the designed size is
caught) are computed exactly for a discretised statistic by the Markov-chain
method of Brook and Evans (1972), on an integer lattice as Reynolds and
Stoumbos (1999) do for the Bernoulli CUSUM:

* the lattice step delta is a fraction (1/r, r >= `resolution`) of the
  smallest weight in absolute value, r chosen so that every other weight is
  close to a whole number of steps too (`_lattice_step`);
* states 0..K-1 are the values the statistic can hold below h = K * delta;
  a step to K or above is the signal (absorption);
* ARL = (I - Q)^-1 1 from state 0, solved as a sparse banded system.

A case mix (several expected probabilities with their shares) makes each
step a mixture, as in Steiner et al. (2000). `simulate_run_lengths` runs the
continuous (unrounded) chart by Monte-Carlo; the tests hold the two within
the simulation's standard error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spinewatch.domain.drift.cusum import llr_weight
from spinewatch.errors import CalibrationCancelled, ChartDesignError

CaseMix = Sequence[tuple[float, float]]  # (expected probability, share of cases)

if TYPE_CHECKING:
    import numpy as np
    from scipy import sparse

# numpy and SciPy are imported by the functions that solve or simulate, not
# here: a worker whose designs are all cached (engine/site_designs.py) never
# needs them, and importing SciPy took ~1 s of every worker start-up.

DEFAULT_RESOLUTION = 40
MAX_STATES = 400_000


@dataclass(frozen=True, slots=True)
class ChartDesign:
    """A Bernoulli CUSUM: its alternative odds ratio, limit, and run lengths."""

    odds_ratio: float
    limit: float  # h
    arl0: float  # cases until a false alarm, on average
    arl1: float  # cases until the designed shift is signalled, on average
    lattice_step: float  # the discretisation step; the next lower limit is limit - step


def shifted_probability(p: float, odds_ratio: float) -> float:
    """p with its odds multiplied by `odds_ratio`."""
    return odds_ratio * p / (1.0 - p + odds_ratio * p)


class _Lattice:
    """The integer steps of each case-mix component, on one lattice."""

    def __init__(self, case_mix: CaseMix, odds_ratio: float, resolution: int) -> None:
        import numpy as np  # noqa: PLC0415 - see above: off the start-up path

        shares = np.array([share for _, share in case_mix], dtype=float)
        if len(case_mix) == 0 or np.any(shares <= 0):
            raise ChartDesignError("a case mix needs at least one stratum with a positive share")
        self.shares = shares / shares.sum()
        self.probabilities = np.array([p for p, _ in case_mix], dtype=float)
        weights = [
            (llr_weight(1, 1, p, odds_ratio), llr_weight(0, 1, p, odds_ratio)) for p, _ in case_mix
        ]
        flat = [w for pair in weights for w in pair]
        if len(case_mix) == 1:
            self.delta = _lattice_step(flat, resolution)
        else:
            # A mixture's weights share no fine common step: the search picked
            # 1/160 of the smallest weight, some 20,000 states and minutes of
            # solves (4 strata: over 300 s; 3 strata: 26 s). A fixed step of
            # 2/resolution of it (1/20 by default) keeps h within 0.3% of the
            # search's (3 strata, ARL0 2,000: 3.328 against 3.323) in under a
            # second; the achieved ARL0 is computed on the same lattice.
            self.delta = min(abs(w) for w in flat) / max(1, resolution // 2)
        self.steps = [(round(w1 / self.delta), round(w0 / self.delta)) for w1, w0 in weights]
        self.odds_ratio = odds_ratio

    def states_for(self, limit: float) -> int:
        states = max(1, math.ceil(limit / self.delta - 1e-9))
        if states > MAX_STATES:
            raise ChartDesignError(
                f"limit {limit} needs {states} lattice states; lower the resolution"
            )
        return states

    def arl(self, states: int, true_odds_ratio: float) -> float:
        """Average run length from zero with `states` states below the limit."""
        import numpy as np  # noqa: PLC0415
        from scipy import sparse  # noqa: PLC0415
        from scipy.sparse.linalg import spsolve  # noqa: PLC0415

        q = self.transitions(states, true_odds_ratio)
        system = sparse.identity(states, format="csr") - q
        lengths = spsolve(system.tocsc(), np.ones(states))
        return float(np.atleast_1d(lengths)[0])

    def transitions(self, states: int, true_odds_ratio: float) -> sparse.csr_matrix:
        """Q: one case's transition probabilities among the non-signalling states."""
        import numpy as np  # noqa: PLC0415
        from scipy import sparse  # noqa: PLC0415

        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        values: list[np.ndarray] = []
        here = np.arange(states)
        for share, p, (up, down) in zip(self.shares, self.probabilities, self.steps, strict=True):
            p_true = shifted_probability(float(p), true_odds_ratio)
            for step, probability in ((up, p_true), (down, 1.0 - p_true)):
                target = np.maximum(here + step, 0)
                stays = target < states  # otherwise absorbed: the chart signals
                rows.append(here[stays])
                cols.append(target[stays])
                values.append(np.full(int(stays.sum()), share * probability))
        return sparse.csr_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
            shape=(states, states),
        )


def _lattice_step(weights: Sequence[float], resolution: int) -> float:
    """A lattice step that puts every weight close to a whole number of steps.

    The smallest weight is `r` steps for some r in resolution..4*resolution,
    chosen to minimise the largest relative rounding error of the others:
    the ARL is sensitive to a bias in the drift of the statistic, and a
    bias of 1% in one weight moved ARL0 by ~7% in a test at p = 0.3.
    """
    smallest = min(abs(w) for w in weights)

    def worst_error(r: int) -> float:
        delta = smallest / r
        return max(abs(w / delta - round(w / delta)) / abs(w / delta) for w in weights)

    best = min(range(resolution, 4 * resolution + 1), key=worst_error)
    return smallest / best


def run_lengths(
    case_mix: CaseMix,
    odds_ratio: float,
    limit: float,
    *,
    resolution: int = DEFAULT_RESOLUTION,
) -> tuple[float, float]:
    """(ARL0, ARL1) of the chart with this limit; ARL1 under the designed odds ratio."""
    lattice = _Lattice(case_mix, odds_ratio, resolution)
    states = lattice.states_for(limit)
    return lattice.arl(states, 1.0), lattice.arl(states, odds_ratio)


def calibrate(
    case_mix: CaseMix,
    odds_ratio: float,
    target_arl0: float,
    *,
    resolution: int = DEFAULT_RESOLUTION,
    cancelled: Callable[[], bool] | None = None,
) -> ChartDesign:
    """The smallest limit h whose in-control ARL reaches `target_arl0`.

    `cancelled` is asked before each solve: a mixture's design takes up to
    ~20 solves of ~1 s each, and a worker that is stopping must not wait
    for them (`CalibrationCancelled`).
    """
    if target_arl0 <= 1:
        raise ChartDesignError(f"target ARL0 must exceed 1 case, got {target_arl0}")
    lattice = _Lattice(case_mix, odds_ratio, resolution)
    known: dict[int, float] = {}

    def arl0(states: int) -> float:
        if states not in known:
            if cancelled is not None and cancelled():
                raise CalibrationCancelled("calibration cancelled")
            known[states] = lattice.arl(states, 1.0)
        return known[states]

    low, high = 1, 1
    # ARL0 grows with the limit: double until it reaches the target...
    while arl0(high) < target_arl0:
        low, high = high, high * 2
        if high > MAX_STATES:
            raise ChartDesignError(f"ARL0 {target_arl0} needs a limit beyond {MAX_STATES} states")
    states = _smallest_reaching(arl0, target_arl0, low, high)
    return ChartDesign(
        odds_ratio=odds_ratio,
        limit=states * lattice.delta,
        arl0=arl0(states),
        arl1=lattice.arl(states, odds_ratio),
        lattice_step=lattice.delta,
    )


def _smallest_reaching(arl0: Callable[[int], float], target: float, low: int, high: int) -> int:
    """The smallest state count in (low, high] whose ARL0 reaches the target,
    given arl0(high) >= target and (low == high or arl0(low) < target).

    log ARL0 is close to linear in the limit, so the next count tried is
    interpolated on it, which lands within a few states in one or two
    solves where bisection took ten; every other try is a bisection, so a
    poor interpolation never costs more than twice bisection's solves. The
    answer is the same integer either way: only the order of tries differs.
    """
    interpolate = True
    while high - low > 1:
        if interpolate:
            below, above = math.log(arl0(low)), math.log(arl0(high))
            share = (math.log(target) - below) / (above - below) if above > below else 0.5
            guess = low + round(share * (high - low))
        else:
            guess = (low + high) // 2
        guess = min(max(guess, low + 1), high - 1)
        if arl0(guess) >= target:
            high = guess
        else:
            low = guess
        interpolate = not interpolate
    return high


def signal_probability(
    case_mix: CaseMix,
    odds_ratio: float,
    limit: float,
    cases: int,
    *,
    true_odds_ratio: float = 1.0,
    resolution: int = DEFAULT_RESOLUTION,
) -> float:
    """P(the chart signals within `cases` cases), from the same Markov chain.

    With true_odds_ratio = 1 this is the false-alarm probability over a
    stream of that length: what a stable site should see.
    """
    import numpy as np  # noqa: PLC0415

    lattice = _Lattice(case_mix, odds_ratio, resolution)
    states = lattice.states_for(limit)
    q = lattice.transitions(states, true_odds_ratio).transpose().tocsr()
    alive = np.zeros(states)
    alive[0] = 1.0
    for _ in range(cases):
        alive = q @ alive
    return float(1.0 - alive.sum())


def simulate_run_lengths(
    case_mix: CaseMix,
    odds_ratio: float,
    limit: float,
    *,
    true_odds_ratio: float = 1.0,
    runs: int,
    seed: int,
    max_cases: int = 1_000_000,
) -> np.ndarray:
    """Cases until the continuous chart signals, for `runs` seeded streams."""
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    shares = np.array([share for _, share in case_mix], dtype=float)
    shares /= shares.sum()
    probabilities = np.array([p for p, _ in case_mix], dtype=float)
    up = np.array([llr_weight(1, 1, p, odds_ratio) for p in probabilities])
    down = np.array([llr_weight(0, 1, p, odds_ratio) for p in probabilities])
    p_true = np.array([shifted_probability(p, true_odds_ratio) for p in probabilities])
    statistic = np.zeros(runs)
    lengths = np.zeros(runs, dtype=np.int64)
    active = np.ones(runs, dtype=bool)
    for case in range(1, max_cases + 1):
        n = int(active.sum())
        if n == 0:
            break
        stratum = rng.choice(len(shares), size=n, p=shares)
        adverse = rng.random(n) < p_true[stratum]
        step = np.where(adverse, up[stratum], down[stratum])
        statistic[active] = np.maximum(0.0, statistic[active] + step)
        crossed = np.zeros(runs, dtype=bool)
        crossed[active] = statistic[active] >= limit
        lengths[crossed] = case
        active &= ~crossed
    lengths[active] = max_cases  # censored; callers size max_cases well above the ARL
    return lengths
