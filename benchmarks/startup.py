"""Where a worker's start-up seconds go: cold and warm design cache, to /readyz green.

    .venv/bin/python benchmarks/startup.py [--rounds 3] [--json]

Each round starts `spinewatch worker --embedded-broker` as a real process
(its own Tansu broker, a fresh data directory) twice: first with an empty
design cache (cold), then on the same data directory (warm, a restart).
It polls /readyz until 200 and reads the worker's ready line, which splits
the time (engine/startup.py): process start to the embedded broker and
the topics (imports included), the drift designs (and how many were
calibrated), faust's start with the consumer group join and the state
recovery; then /readyz green (the first metrics rendering included).
Separately, best of three, the time to import the worker's modules in a
fresh interpreter (`import spinewatch.engine.main`), and which heavy
modules that loads.

The worker holds no state here: recovery of a large state is
`pipeline.py`'s restore case. Not part of the test suite; progress to
stderr, the table (or --json) to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

READY_LINE = re.compile(
    r"worker ready ([\d.]+) s after the process started: topics ([\d.]+) s, "
    r"drift designs ([\d.]+) s \((\d+) calibrated\), group join and recovery ([\d.]+) s; "
    r"heavy modules loaded: (.*)$",
    re.MULTILINE,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_once(data_dir: Path) -> dict[str, Any]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINEWATCH_")}
    env |= {
        "SPINEWATCH_METRICS_PORT": str(port),
        "SPINEWATCH_WEB_PORT": str(free_port()),
        "SPINEWATCH_DATA_DIR": str(data_dir),
        "SPINEWATCH_LOG_LEVEL": "info",
    }
    with tempfile.TemporaryFile() as log:
        began = time.monotonic()
        # This interpreter, our own CLI.
        process = subprocess.Popen(
            [sys.executable, "-m", "spinewatch", "worker", "--embedded-broker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            ready_s = _wait_ready(port, process, began)
        finally:
            process.terminate()
            process.wait(timeout=60)
        log.seek(0)
        text = log.read().decode(errors="replace")
    found = READY_LINE.search(text)
    if found is None:  # an older checkout: the total only
        return {"readyz_s": round(ready_s, 2)}
    age, topics, designs, calibrated, joined, heavy = found.groups()
    return {
        "readyz_s": round(ready_s, 2),
        "faust_ready_s": float(age),
        "broker_and_imports_s": round(
            float(age) - float(topics) - float(designs) - float(joined), 2
        ),
        "topics_s": float(topics),
        "designs_s": float(designs),
        "calibrated": int(calibrated),
        "join_and_recovery_s": float(joined),
        "heavy_modules": heavy,
    }


def _wait_ready(port: int, process: subprocess.Popen[bytes], began: float) -> float:
    while time.monotonic() - began < 300:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return time.monotonic() - began
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError("the worker was not ready within 300 s")


def import_time() -> dict[str, Any]:
    code = (
        "import sys, time, json; t = time.perf_counter(); import spinewatch.engine.main; "
        "print(json.dumps([time.perf_counter() - t, "
        "[m for m in ('scipy', 'numpy', 'matplotlib', 'playwright') if m in sys.modules]]))"
    )
    runs = []
    for _ in range(3):
        # This interpreter, fixed code.
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(done.stdout))
    return {"seconds": round(min(r[0] for r in runs), 2), "heavy_modules": runs[0][1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    imported = import_time()
    print(f"import spinewatch.engine.main: {imported}", file=sys.stderr)
    results: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": []}
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory() as data:
            for case in ("cold", "warm"):
                result = start_once(Path(data))
                results[case].append(result)
                print(f"round {round_ + 1} {case}: {result}", file=sys.stderr)
    if args.json:
        print(json.dumps({"import": imported, **results}, indent=2))
        return 0
    print(f"import spinewatch.engine.main: {imported['seconds']} s (best of 3), "
          f"heavy modules: {imported['heavy_modules'] or 'none'}")  # fmt: skip
    fields = ("readyz_s", "broker_and_imports_s", "designs_s", "join_and_recovery_s")
    print("| cache | /readyz green s | broker + imports s | designs s (calibrated) | "
          "join + recovery s | heavy modules at ready |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for case, runs in results.items():
        if "calibrated" not in runs[0]:
            total = statistics.median(r["readyz_s"] for r in runs)
            print(f"| {case} | {total:.2f} | (no ready line: an older checkout) | | | |")
            continue
        median = {f: round(statistics.median(r[f] for r in runs), 2) for f in fields}
        calibrated = statistics.median(r["calibrated"] for r in runs)
        heavy = sorted({r["heavy_modules"] for r in runs})
        print(f"| {case} | {median['readyz_s']} | {median['broker_and_imports_s']} | "
              f"{median['designs_s']} ({calibrated:g}) | {median['join_and_recovery_s']} | "
              f"{'; '.join(heavy)} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
