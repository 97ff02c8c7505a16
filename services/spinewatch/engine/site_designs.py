"""Calibrating each site's chart designs off the event loop, cached in memory and on disk.

A mixture calibration takes seconds (1.5-13 s per chart measured), far
too long for the drift loop or a scrape: `SiteDesigner.design` answers from
the caches or returns None and queues the calibration on one background
thread (one, not a pool: the machine's cores belong to ingest). The caller
keeps the site's previous design meanwhile and asks again on its next
refresh.

The on-disk cache (`drift-designs.json` under `data_dir`) is keyed by the
design inputs and `ALGORITHM_VERSION`, so a restarted worker, or another
worker of the same data directory, designs a known site at once. It holds
numbers only: no site, patient or procedure id.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from spinewatch.domain.drift.arl import ChartDesign
from spinewatch.domain.drift.chart_fold import AnyChart, CaseKey, ChartCase
from spinewatch.domain.drift.design import MonitoredChart
from spinewatch.domain.drift.site_design import (
    ALGORITHM_VERSION,
    AnyDesign,
    DesignKey,
    SiteBudget,
    SiteChartPlan,
    compute_design,
    plan_site,
    stratum_run_lengths,
)
from spinewatch.domain.drift.vas_chart import VasChartDesign

log = logging.getLogger(__name__)

CACHE_FILE = "drift-designs.json"

SiteDesign = tuple[tuple[SiteChartPlan, ...], tuple[AnyDesign, ...]]


class DesignCache:
    """Designs by key text, persisted as one JSON object (written atomically)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._designs: dict[str, AnyDesign] = {}
        self._lock = threading.Lock()
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("drift design cache %s unreadable, starting empty: %s", path, exc)
            return
        if not isinstance(stored, dict) or stored.get("version") != ALGORITHM_VERSION:
            return  # another algorithm's designs: recalibrate
        for key, fields in stored.get("designs", {}).items():
            try:
                design: AnyDesign = (
                    VasChartDesign(**fields) if "shift_sd" in fields else ChartDesign(**fields)
                )
            except TypeError:
                continue
            if _plausible(design):  # else recalibrated: a start-up now trusts this file
                self._designs[key] = design

    def get(self, key: DesignKey) -> AnyDesign | None:
        return self._designs.get(key.as_text())

    def put(self, key: DesignKey, design: AnyDesign) -> None:
        with self._lock:
            self._designs[key.as_text()] = design
            if self.path is not None:
                self._save(self.path)

    def _save(self, path: Path) -> None:
        document = {
            "version": ALGORITHM_VERSION,
            "designs": {key: asdict(design) for key, design in sorted(self._designs.items())},
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            temporary.write_text(json.dumps(document), encoding="utf-8")
            os.replace(temporary, path)
        except OSError as exc:  # a read-only data dir costs recalibration only
            log.warning("drift design cache %s not written: %s", path, exc)

    def __len__(self) -> int:
        return len(self._designs)


class SiteDesigner:
    """Each site's budget, and its chart designs: cached, or calibrated in the background."""

    def __init__(
        self,
        arl0_months: float,
        site_budgets: Mapping[str, SiteBudget] | None = None,
        cache: DesignCache | None = None,
        *,
        background: bool = True,
    ) -> None:
        self.arl0_months = arl0_months
        self.site_budgets = dict(site_budgets or {})
        self.cache = cache if cache is not None else DesignCache(None)
        self._executor = (
            ThreadPoolExecutor(1, thread_name_prefix="drift-design") if background else None
        )
        self._running: dict[DesignKey, Future[AnyDesign]] = {}
        # Per site: the design job of its latest snapshot (or, without a
        # background thread, its answer).
        self._jobs: dict[Hashable, Future[SiteDesign]] = {}
        self._done: dict[Hashable, SiteDesign] = {}
        self.calibrations = 0  # how many this process ran (cache misses)
        # Set by `close`: a running calibration stops at its next solve.
        self._closing = threading.Event()

    def budget(self, site_id: str) -> SiteBudget:
        return self.site_budgets.get(site_id, SiteBudget(self.arl0_months))

    def provisional_rate(
        self, p0s: tuple[float, ...], odds_ratio: float, target_arl0: float
    ) -> ChartDesign:
        """A rate chart's provisional design (the largest single-stratum h): cached, or
        calibrated now, in the caller's thread (start-up, before anything runs)."""
        key = DesignKey("per_stratum", odds_ratio, target_arl0, tuple((p0, 1.0) for p0 in p0s))
        design = self._known(key)
        if not isinstance(design, ChartDesign):
            raise TypeError(f"design cache: {key.as_text()} is not a rate chart's design")
        return design

    def provisional_vas(self, shift_sd: float, target_arl0: float) -> VasChartDesign:
        """A VAS chart's design (mix-free): cached, or calibrated now."""
        design = self._known(DesignKey("vas", shift_sd, target_arl0))
        if not isinstance(design, VasChartDesign):
            raise TypeError("design cache: a VAS key holds a rate chart's design")
        return design

    def _known(self, key: DesignKey) -> AnyDesign:
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        design = compute_design(key)
        self.calibrations += 1
        self.cache.put(key, design)
        return design

    def design(self, plan: SiteChartPlan) -> AnyDesign | None:
        """The plan's design if known; else None, and it is being calibrated."""
        key = plan.key
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        if self._executor is None:
            return self._calibrate(plan)
        running = self._running.get(key)
        if running is None:
            self._running[key] = self._executor.submit(self._calibrate, plan)
            return None
        if not running.done():
            return None
        del self._running[key]
        return running.result()  # a ChartDesignError here is a design bug: surfaced

    def request(
        self,
        site: Hashable,
        site_id: str,
        charts: Sequence[AnyChart],
        cases: Sequence[tuple[CaseKey, ChartCase]],
    ) -> None:
        """Measure and design a site's charts from a snapshot of its cases, in the background.

        Measuring is a pass over the site's cases (0.4 s at 10,000 cases and
        8 charts): it runs on the design thread too, not on the event loop.
        A newer snapshot replaces an older one not yet started.
        """
        budget = self.budget(site_id)
        if self._executor is None:
            self._done[site] = self._site_design(charts, cases, budget)
            return
        older = self._jobs.get(site)
        if older is not None:
            older.cancel()
        self._jobs[site] = self._executor.submit(self._site_design, charts, cases, budget)

    def take(self, site: Hashable) -> SiteDesign | None:
        """The site's plans and designs once its latest request is done; else None."""
        if self._executor is None:
            return self._done.pop(site, None)
        job = self._jobs.get(site)
        if job is None or not job.done():
            return None
        del self._jobs[site]
        return job.result()

    def busy(self) -> bool:
        """A site's design requested and not taken yet."""
        return bool(self._jobs or self._done)

    def forget(self) -> None:
        """Drop every site's pending request (the partitions were rebuilt)."""
        for job in self._jobs.values():
            job.cancel()
        self._jobs, self._done = {}, {}

    def _site_design(
        self,
        charts: Sequence[AnyChart],
        cases: Sequence[tuple[CaseKey, ChartCase]],
        budget: SiteBudget,
    ) -> SiteDesign:
        plans = plan_site(charts, cases, budget)
        designs = []
        for plan in plans:
            cached = self.cache.get(plan.key)
            designs.append(cached if cached is not None else self._calibrate(plan))
        return plans, tuple(designs)

    def _calibrate(self, plan: SiteChartPlan) -> AnyDesign:
        design = compute_design(plan.key, self._closing.is_set)
        if isinstance(design, ChartDesign):
            # Warm the per-stratum run lengths a signal message will need.
            for p0, _ in plan.key.mix:
                stratum_run_lengths(p0, design.odds_ratio, design.limit)
        self.calibrations += 1
        self.cache.put(plan.key, design)
        return design

    def warm_up(self, charts: Sequence[AnyChart]) -> None:
        """After start-up, on the design thread: import SciPy and solve what a first
        signal message (each stratum's run lengths) would otherwise solve on the event
        loop. A start-up from a warm cache imports neither (`running_worker`)."""
        if self._executor is not None:
            self._executor.submit(self._warm, tuple(charts))

    def _warm(self, charts: tuple[AnyChart, ...]) -> None:
        import scipy.stats  # noqa: F401, PLC0415 - the first funnel limits need it

        for chart in charts:
            if not isinstance(chart, MonitoredChart):
                continue
            design = chart.design
            for risk in chart.strata.values():
                if self._closing.is_set():
                    return
                stratum_run_lengths(risk.p0, design.odds_ratio, design.limit)

    def close(self) -> None:
        """Drop queued calibrations and stop a running one at its next solve (~1 s at most:
        a three-stratum mixture took 26 s, and every stopping worker waited for it)."""
        self._closing.set()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)


def _plausible(design: AnyDesign) -> bool:
    """Every number finite and positive, ARL0 above one case: what a calibration yields."""
    values = list(asdict(design).values())
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return False
    return all(math.isfinite(v) and v > 0 for v in values) and design.arl0 > 1


def cache_in(data_dir: Path) -> DesignCache:
    return DesignCache(data_dir / CACHE_FILE)
