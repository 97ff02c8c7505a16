"""Detection delay and false alarms: the CUSUM charts next to the naive threshold rule.

    .venv/bin/python benchmarks/drift.py [--runs 2000] [--arl0 1000] [--json]

For a few baselines from the catalog, one set of seeded simulated streams
per baseline is judged by both rules:

* stable streams (every case at the baseline p0) for `--cases` cases: the
  share of streams with any alarm is the false-alarm rate;
* shifted streams: in control for `--before` cases, then the odds doubled:
  detection share (an alarm at or after the change) and the median delay.
  An early alarm does not count as detection: the CUSUM resets after a
  signal, the naive rule is simply read again at every case.

The naive rule is the one dashboards tend to use: alarm as soon as the
cumulative observed rate exceeds the baseline, once at least `--min-cases`
cases are in. The CUSUM is designed (Markov chain) for the ARL0 given.
Not a test: it prints a table (or one JSON object) and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from spinewatch.baselines import load_catalog
from spinewatch.domain.drift.arl import calibrate, shifted_probability
from spinewatch.domain.drift.cusum import llr_weight

BASELINES = (
    "s000.leakage.per_level",  # PVP for hemangioma, leakage per treated level: 3/28
    "s001.complication.pvp",  # PVP for hemangioma, complications per patient: 2.5%
    "s003.pilitis.metastasis",  # PVP for metastases, complications per patient: 10%
)


@dataclass(frozen=True, slots=True)
class RuleResult:
    false_alarm_share: float  # stable streams with any alarm
    alarms_per_1000: float  # alarms raised per 1000 in-control cases
    detected_share: float  # shifted streams with an alarm after the change
    median_delay: float | None  # cases from the change to that alarm


@dataclass(frozen=True, slots=True)
class Row:
    baseline_id: str
    p0: float
    h: float
    arl0: float
    arl1: float
    cusum: RuleResult
    naive: RuleResult


def first_alarms_cusum(
    outcomes: np.ndarray, p0: float, odds_ratio: float, h: float, start: int = 0
) -> np.ndarray:
    """First case at or after `start` where each stream's CUSUM signals; -1 if never.

    The chart resets after every signal, as the engine's does, so a false
    alarm before `start` does not mask the shift that follows it.
    """
    up, down = llr_weight(1, 1, p0, odds_ratio), llr_weight(0, 1, p0, odds_ratio)
    runs, cases = outcomes.shape
    statistic = np.zeros(runs)
    first = np.full(runs, -1)
    for case in range(cases):
        statistic = np.maximum(0.0, statistic + np.where(outcomes[:, case], up, down))
        crossed = statistic >= h
        statistic[crossed] = 0.0
        if case >= start:
            first[crossed & (first < 0)] = case
    return first


def first_alarms_naive(
    outcomes: np.ndarray, p0: float, min_cases: int, start: int = 0
) -> np.ndarray:
    """First case at or after `start` where the cumulative rate exceeds p0; -1 if never."""
    cases = np.arange(1, outcomes.shape[1] + 1)
    rate = np.cumsum(outcomes, axis=1) / cases
    above = (rate > p0) & (cases >= min_cases) & (cases > start)
    return np.where(above.any(axis=1), above.argmax(axis=1), -1)


def alarm_counts_cusum(outcomes: np.ndarray, p0: float, odds_ratio: float, h: float) -> float:
    """Signals per 1000 cases, with a reset after each (what on-call staff would get)."""
    up, down = llr_weight(1, 1, p0, odds_ratio), llr_weight(0, 1, p0, odds_ratio)
    statistic = np.zeros(outcomes.shape[0])
    signals = 0
    for case in range(outcomes.shape[1]):
        statistic = np.maximum(0.0, statistic + np.where(outcomes[:, case], up, down))
        crossed = statistic >= h
        signals += int(crossed.sum())
        statistic[crossed] = 0.0
    return 1000.0 * signals / outcomes.size


def alarm_counts_naive(outcomes: np.ndarray, p0: float, min_cases: int) -> float:
    """Cases read as "above baseline" per 1000 cases: each would be an alarm."""
    cases = np.arange(1, outcomes.shape[1] + 1)
    above = (np.cumsum(outcomes, axis=1) / cases > p0) & (cases >= min_cases)
    return 1000.0 * float(above.mean())


def judge(
    stable_first: np.ndarray, alarms_per_1000: float, shifted_first: np.ndarray, before: int
) -> RuleResult:
    detected = shifted_first >= before
    delays = shifted_first[detected] - before + 1
    return RuleResult(
        false_alarm_share=float((stable_first >= 0).mean()),
        alarms_per_1000=alarms_per_1000,
        detected_share=float(detected.mean()),
        median_delay=float(np.median(delays)) if len(delays) else None,
    )


def run(args: argparse.Namespace) -> list[Row]:
    catalog = {entry.id: entry for entry in load_catalog().baselines}
    rows = []
    for number, baseline_id in enumerate(BASELINES):
        p0 = float(catalog[baseline_id].statistic.value)  # type: ignore[union-attr]
        design = calibrate([(p0, 1.0)], args.shift, args.arl0)
        rng = np.random.default_rng(args.seed + number)
        total = args.before + args.after
        stable = rng.random((args.runs, args.cases)) < p0
        p1 = shifted_probability(p0, args.shift)
        risks = np.concatenate([np.full(args.before, p0), np.full(args.after, p1)])
        shifted = rng.random((args.runs, total)) < risks
        rows.append(
            Row(
                baseline_id,
                p0,
                design.limit,
                design.arl0,
                design.arl1,
                judge(
                    first_alarms_cusum(stable, p0, args.shift, design.limit),
                    alarm_counts_cusum(stable, p0, args.shift, design.limit),
                    first_alarms_cusum(shifted, p0, args.shift, design.limit, args.before),
                    args.before,
                ),
                judge(
                    first_alarms_naive(stable, p0, args.min_cases),
                    alarm_counts_naive(stable, p0, args.min_cases),
                    first_alarms_naive(shifted, p0, args.min_cases, args.before),
                    args.before,
                ),
            )
        )
    return rows


def table(rows: Sequence[Row], args: argparse.Namespace) -> str:
    lines = [
        f"{args.runs} seeded streams per baseline; stable: {args.cases} cases at p0; shifted: "
        f"{args.before} at p0, then {args.after} at odds x{args.shift:g}. CUSUM designed for "
        f"ARL0 {args.arl0:g} cases; naive: cumulative rate > p0 after >= {args.min_cases} cases.",
        "false alarms: stable streams with any alarm; alarms/1000: alarms per 1000 in-control "
        "cases; delay: cases from the shift to the first alarm at or after it.",
        "",
        f"{'baseline':<26} {'p0':>6} {'h':>6} {'ARL1':>6}  {'rule':<6} {'false alarms':>12} "
        f"{'alarms/1000':>12} {'detected':>9} {'median delay':>13}",
        "-" * 107,
    ]
    for row in rows:
        for name, result in (("CUSUM", row.cusum), ("naive", row.naive)):
            delay = f"{result.median_delay:.0f}" if result.median_delay is not None else "-"
            lines.append(
                f"{row.baseline_id:<26} {row.p0:>6.3f} {row.h:>6.2f} {row.arl1:>6.0f}  "
                f"{name:<6} {result.false_alarm_share:>12.1%} {result.alarms_per_1000:>12.1f} "
                f"{result.detected_share:>9.1%} {delay:>13}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--cases", type=int, default=1000, help="length of a stable stream")
    parser.add_argument("--before", type=int, default=200, help="in-control cases before a shift")
    parser.add_argument("--after", type=int, default=800, help="cases after the shift")
    parser.add_argument("--shift", type=float, default=2.0, help="odds ratio of the shift")
    parser.add_argument("--arl0", type=float, default=1000.0, help="CUSUM design ARL0, cases")
    parser.add_argument("--min-cases", type=int, default=20, help="naive rule's minimum n")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = run(args)
    if args.json:
        print(json.dumps({"settings": vars(args), "rows": [asdict(row) for row in rows]}))
    else:
        print(table(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
