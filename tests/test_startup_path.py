"""A worker's start-up path: chart designs from the disk cache, no SciPy before ready.

Issue 20: a worker took 15-33 s to become ready, importing SciPy and
designing every drift chart at each start. The provisional designs now
come from `drift-designs.json` under `data_dir` (keyed by their inputs and
the algorithm version), and SciPy and numpy are imported only where a
design is calibrated or a funnel computed. Each check here fails when a
module of the start-up path imports SciPy at its top again, or when the
start-up designs ignore the cache.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spinewatch.domain.drift.site_design import default_volume, provisional_plan
from spinewatch.engine.bootstrap import drift_monitor
from spinewatch.engine.settings import Settings
from spinewatch.engine.site_designs import CACHE_FILE, DesignCache
from spinewatch.engine.startup import HEAVY_MODULES
from tests.support import scaled
from tests.workers import WorkerProcess

# Every module a worker imports to start: the CLI, the entry point, the
# wiring, and what the wiring imports late (the collectors, the renderer).
START_PATH = (
    "spinewatch.cli.main",
    "spinewatch.engine.main",
    "spinewatch.engine.bootstrap",
    "spinewatch.engine.metrics",
    "spinewatch.engine.metric_renderer",
    "spinewatch.engine.startup",
)


def _run_python(code: str) -> str:
    done = subprocess.run(  # noqa: S603 - this interpreter, our own code
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_importing_the_start_path_loads_no_scipy_numpy_or_report_libraries() -> None:
    imports = "; ".join(f"import {module}" for module in START_PATH)
    code = f"import sys, json; {imports}; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(_run_python(code)))
    assert set(START_PATH) <= loaded  # the imports happened
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY_MODULES)
    assert heavy == [], f"the start-up path imports {heavy[:5]}"


def test_a_restart_takes_every_provisional_design_from_the_cache_without_scipy(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    first = drift_monitor(settings, background=False)
    assert first.designer is not None
    assert first.designer.calibrations > 0  # a cold cache: calibrated, then written
    assert (tmp_path / CACHE_FILE).is_file()
    for chart in first.charts:
        # Under the key a site's provisional plan looks its design up by.
        key = provisional_plan(chart, settings.drift_arl0_months, default_volume(chart)).key
        assert first.designer.cache.get(key) == chart.design, chart.name

    # A restart, in a process of its own (this one has SciPy loaded by now).
    code = (
        "import sys, json; from pathlib import Path; "
        "from spinewatch.engine.bootstrap import drift_monitor; "
        "from spinewatch.engine.settings import Settings; "
        f"m = drift_monitor(Settings(data_dir=Path({str(tmp_path)!r})), background=False); "
        "print(json.dumps({'calibrations': m.designer.calibrations, "
        "'scipy': 'scipy' in sys.modules, 'numpy': 'numpy' in sys.modules, "
        "'limits': [c.design.limit for c in m.charts]}))"
    )
    restarted = json.loads(_run_python(code))
    assert restarted == {
        "calibrations": 0,
        "scipy": False,
        "numpy": False,
        "limits": [chart.design.limit for chart in first.charts],
    }


def test_an_implausible_cached_design_is_recalibrated_not_trusted(tmp_path: Path) -> None:
    first = drift_monitor(Settings(data_dir=tmp_path), background=False)
    path = tmp_path / CACHE_FILE
    document = json.loads(path.read_text())
    key = next(iter(document["designs"]))
    document["designs"][key]["limit"] = math.nan  # JSON NaN: what a hand edit can leave
    path.write_text(json.dumps(document))
    assert len(DesignCache(path)) == len(document["designs"]) - 1
    again = drift_monitor(Settings(data_dir=tmp_path), background=False)
    assert again.designer is not None
    assert again.designer.calibrations == 1  # that one design, and no other
    assert [c.design for c in again.charts] == [c.design for c in first.charts]


READY_LINE = re.compile(
    r"worker ready ([\d.]+) s after the process started: .*drift designs [\d.]+ s "
    r"\((\d+) calibrated\).*heavy modules loaded: (.*)$",
    re.MULTILINE,
)


@pytest.mark.e2e
async def test_a_worker_restarted_on_a_warm_design_cache_is_ready_without_scipy(
    tmp_path: Path,
) -> None:
    # The designs a first start would have written (in this process: quicker).
    drift_monitor(Settings(data_dir=tmp_path), background=False)
    settings = Settings(embedded_broker=True, data_dir=tmp_path, log_level="info")
    worker = WorkerProcess(settings)
    worker.start()
    try:
        deadline = time.monotonic() + scaled(120)
        while (ready := READY_LINE.search(worker.stderr())) is None:
            assert worker.process is not None
            assert worker.process.poll() is None, worker.stderr()[-3000:]
            assert time.monotonic() < deadline, worker.stderr()[-3000:]
            await asyncio.sleep(0.2)
        await worker.wait_for_partitions(timeout_s=60)
    finally:
        worker.stop()
    assert ready.group(2) == "0", ready.group(0)  # nothing calibrated
    assert ready.group(3) == "none", ready.group(0)  # no scipy, numpy, matplotlib...
