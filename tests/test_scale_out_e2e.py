"""Scale-out: three worker processes share twelve partitions; one is SIGKILLed mid-stream.

What a platform team relies on when it runs more than one worker:
- the partitions are spread (faust's co-partitioned assignor caps each
  worker at ceil(partitions / workers)), and so are the sites: every worker
  holds procedures, none holds most sites;
- after a worker dies, the survivors own every partition again, once each;
- the Prometheus-style sum over the survivors' `/metrics` equals what one
  worker alone reports for the same events (a reference deployment of its
  own on the same broker), series by series, for every cohort family.

Facts are keyed by site (the producer's murmur2 partitioner), so the sites
are chosen by that same partitioner: two on every partition, none idle.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner

from spinewatch.adapters.kafka_admin import ensure_topics
from spinewatch.demo.synthetic.cohort import (
    SiteProfile,
    SyntheticCohort,
    default_sites,
    generate_cohort,
)
from spinewatch.engine.settings import Settings
from tests.conftest import SettingsFactory
from tests.expectation import expected_counts, observed_counts
from tests.support import (
    Sample,
    produce,
    rendered_all_applied,
    scrape_async,
    sum_by,
    wait_until,
)
from tests.workers import WorkerProcess

pytestmark = pytest.mark.e2e

PARTITIONS = 12
WORKERS = 3
SITES_PER_PARTITION = 2
CHARTED = ("cement_leakage_rate_per_level", "complication_rate")
BULK_SIZE = 50  # events per bulk message in the second half of the stream

# How each exported family aggregates over the workers of one group, as a
# dashboard must read it. Counts: `sum by` every label set, the all-sites
# roll-up included.
ADDITIVE = frozenset({
    "spinewatch_outcome_numerator",
    "spinewatch_outcome_denominator",
    "spinewatch_vas_patients",
    *(f"spinewatch_followup_{state}" for state in (
        "pending", "due", "received", "received_late", "overdue", "lost", "censored", "closed",
    )),
})  # fmt: skip
# Per-site figures that are not counts: exported by the site's owner only,
# so a `sum by` over workers is that owner's value. Their `site="all"`
# roll-up is one worker's sites only: not summable (the rate is, as a ratio
# of summed counts; checked below).
SITE_EXCLUSIVE_PREFIXES = (
    "spinewatch_outcome_",
    "spinewatch_vas_",
    "spinewatch_drift_",
    "spinewatch_followup_",
)
# The literature baselines compared with: the same value on every worker
# that sees the cohort (`max by`, not `sum by`).
SHARED_PREFIX = "spinewatch_baseline_"
# Per site, but from the wall clock of arrival at this worker: one owner
# each, values not comparable with another deployment's.
ARRIVAL_CLOCK = frozenset({
    "spinewatch_site_seconds_since_last_event",
    "spinewatch_site_silent",
    "spinewatch_site_silence_threshold_seconds",
})  # fmt: skip
# One value per worker (its background design work), no site.
PER_WORKER = frozenset({"spinewatch_drift_design_pending"})
COHORT_PREFIXES = (*SITE_EXCLUSIVE_PREFIXES, SHARED_PREFIX, "spinewatch_site_")


def _sites() -> tuple[tuple[SiteProfile, ...], dict[str, int]]:
    """Two sites per facts partition, by the partitioner the workers' producer uses."""
    partitioner, every = DefaultPartitioner(), list(range(PARTITIONS))
    by_partition: dict[int, list[str]] = defaultdict(list)
    for index in itertools.count():
        name = f"hospital-{index:02d}"
        names = by_partition[partitioner(name.encode(), every, every)]
        if len(names) < SITES_PER_PARTITION:
            names.append(name)
        if all(len(by_partition[p]) == SITES_PER_PARTITION for p in every):
            break
    partition_of = {name: p for p, names in by_partition.items() for name in names}
    mixes = [site.case_mix for site in default_sites(5)]
    sites = tuple(
        SiteProfile(site_id=name, procedures=30, case_mix=mixes[k % 5], operators=2 + k % 3)
        for k, name in enumerate(sorted(partition_of))
    )
    return sites, partition_of


def _bulk(deliveries: Sequence[bytes], malformed: Iterable[bytes]) -> list[bytes]:
    """Valid payloads as JSON arrays of BULK_SIZE; malformed ones stay single messages."""
    broken = set(malformed)
    singles = [raw for raw in deliveries if raw in broken]
    valid = [raw for raw in deliveries if raw not in broken]
    chunks = [valid[i : i + BULK_SIZE] for i in range(0, len(valid), BULK_SIZE)]
    return [b"[" + b",".join(chunk) + b"]" for chunk in chunks] + singles


def _alive(workers: Sequence[WorkerProcess]) -> None:
    """Fail at once, with its log, when a worker that should run has exited."""
    for worker in workers:
        assert worker.process is not None
        code = worker.process.poll()
        assert code is None, f"worker exited with {code}:\n{worker.stderr()[-3000:]}"


async def _assignments(workers: Sequence[WorkerProcess]) -> list[set[int] | None]:
    _alive(workers)
    healths = await asyncio.gather(*(asyncio.to_thread(w.health) for w in workers))
    return [set(h["active_partitions"]) if h else None for h in healths]


def _exclusive_cover(parts: list[set[int] | None]) -> bool:
    """Every worker owns partitions, each partition is owned exactly once."""
    owned = [p for p in parts if p]
    if len(owned) != len(parts):
        return False
    return sum(map(len, owned)) == PARTITIONS and set.union(*owned) == set(range(PARTITIONS))


def _sites_of(samples: dict[Sample, float]) -> set[str]:
    return {
        dict(labels)["site"] for name, labels in samples if name == "spinewatch_outcome_denominator"
    } - {"all"}


def _classify(name: str) -> str:
    if name in ADDITIVE:
        return "additive"
    if name in PER_WORKER:
        return "per_worker"
    if name in ARRIVAL_CLOCK:
        return "arrival"
    if name.startswith(SHARED_PREFIX):
        return "shared"
    if name.startswith(SITE_EXCLUSIVE_PREFIXES):
        return "exclusive"
    return "other"  # process and stream counters: not cohort figures


def _mismatch(kind: str, key: Sample, want: float | None, values: list[float]) -> str | None:
    """How the survivors' exports of one series disagree with the single worker (None: agree)."""
    if kind == "per_worker" or (kind != "additive" and dict(key[1]).get("site") == "all"):
        return None  # one worker's own: its design work, its roll-up of its own sites
    if kind == "additive":  # counts: `sum by` every label set
        agree = bool(values) and math.fsum(values) == want
    elif kind == "shared":  # literature values: the same wherever exported
        agree = bool(values) and want is not None and set(values) == {want}
    elif len(values) != 1:  # a site's figure from two workers would double count
        return f"{len(values)} owners of"
    elif kind == "exclusive":
        agree = values[0] == want
    else:  # arrival clock: one owner, of a site the truth has too; or unclassified
        agree = kind == "arrival" and want is not None
    return None if agree else kind


def _differences(
    truth: dict[Sample, float], scrapes: Sequence[dict[Sample, float]]
) -> dict[str, object]:
    """What the survivors' sum gets wrong against the single worker, series by series."""
    cohort = [{k: v for k, v in s.items() if k[0].startswith(COHORT_PREFIXES)} for s in scrapes]
    want = {k: v for k, v in truth.items() if k[0].startswith(COHORT_PREFIXES)}
    exporters: dict[Sample, list[float]] = defaultdict(list)
    for samples in cohort:
        for key, value in samples.items():
            exporters[key].append(value)
    diff: dict[str, object] = {}
    for key in want.keys() | exporters.keys():
        values = exporters.get(key, [])
        problem = _mismatch(_classify(key[0]), key, want.get(key), values)
        if problem is not None:
            diff[f"{problem} {key}"] = (want.get(key), values)
    # The all-sites rate as a dashboard computes it: sum(numerator) / sum(denominator).
    for (name, labels), rate in want.items():
        if name == "spinewatch_outcome_rate_ratio" and dict(labels).get("site") == "all":
            num = math.fsum(s.get(("spinewatch_outcome_numerator", labels), 0.0) for s in cohort)
            den = math.fsum(s.get(("spinewatch_outcome_denominator", labels), 0.0) for s in cohort)
            if not den or not math.isclose(num / den, rate, rel_tol=1e-12):
                diff[f"ratio of sums {labels}"] = (rate, num, den)
    return diff


async def _polled(worker: WorkerProcess) -> dict[Sample, float]:
    """A scrape while waiting: a worker too busy to answer in time has nothing yet ({})."""
    _alive([worker])
    try:
        return await scrape_async(f"{worker.url}/metrics")
    except OSError:  # refused, or timed out (scaled 10 s) on a machine under heavy load
        return {}


async def _truth(worker: WorkerProcess, events: int) -> dict[Sample, float]:
    """The reference worker's /metrics once every event is applied and every site designed."""
    await worker.wait_for_partitions(180)

    return await wait_until(
        lambda: _polled(worker),
        lambda s: (
            sum_by(s, "spinewatch_events_applied_total") >= events
            and s.get(("spinewatch_drift_design_pending", frozenset())) == 0
            and rendered_all_applied(s)
        ),
        180,
        "the single worker to apply every event and design every site",
    )


async def _create_topics(bootstrap: str, *deployments: Settings) -> None:
    # Before any producer or worker: Tansu would auto-create a topic with 4 partitions.
    for settings in deployments:
        await ensure_topics(
            bootstrap,
            settings.topics.names(),
            settings.partitions,
            configs=settings.topics.configs(),
        )


# Four worker processes start at once (15-33 s each alone on a quiet machine):
# 135-325 s in all here with the load average at 11-16 on two cores.
@pytest.mark.timeout(480)
async def test_survivors_of_a_sigkill_sum_to_what_one_worker_reports(
    make_settings: SettingsFactory, kafka_bootstrap: str, tmp_path: Path
) -> None:
    sites, partition_of = _sites()
    assert set(partition_of.values()) == set(range(PARTITIONS))
    cohort: SyntheticCohort = generate_cohort(20, sites)
    distinct = len(cohort.events)
    half = len(cohort.deliveries) // 2
    first, rest = cohort.deliveries[:half], _bulk(cohort.deliveries[half:], cohort.malformed)

    # The group under test, and a single worker of its own deployment (one
    # partition: a different layout must not change a figure) as the truth.
    # Two rate charts and one VAS chart a site (of the default nine): every
    # drift family is still exported, at a third of the calibration work
    # (0.2-0.6 s a chart, README "Drift charts").
    charts = {"drift_metrics": CHARTED, "drift_vas_timepoints": ("final",)}
    settings = make_settings(partitions=PARTITIONS, **charts)
    single = make_settings(app_id=f"{settings.app_id}-one", partitions=1, **charts)
    await _create_topics(kafka_bootstrap, settings, single)

    def worker(settings: Settings, name: str) -> WorkerProcess:
        # A data directory each (a volume each in production): no worker
        # finds a design another one calibrated.
        return WorkerProcess(settings.model_copy(update={"data_dir": tmp_path / name}))

    workers = [worker(settings, f"worker-{i}") for i in range(WORKERS)]
    reference = worker(single, "single")
    started = time.monotonic()

    def phase(what: str) -> None:  # shown when the test fails: where the time went
        print(f"{time.monotonic() - started:6.1f} s  {what}")

    for process in (*workers, reference):
        process.start()
    truth_task = asyncio.create_task(_truth(reference, distinct))
    try:
        await produce(kafka_bootstrap, single.events_topic, cohort.deliveries)

        # Spread: each worker owns partitions, each partition one owner, and
        # no worker more than faust's assignor allows (ceil(P / workers)).
        await wait_until(
            lambda: _assignments(workers), _exclusive_cover, 180, "three workers to share"
        )
        phase("three workers share the partitions")
        owned = await _assignments(workers)
        capacity = math.ceil(PARTITIONS / WORKERS)
        assert all(len(p or ()) <= capacity for p in owned), owned
        # The truth before the kill, so the times measured from it are the group's own.
        truth = await truth_task
        phase("the single worker's truth is in")
        # The single worker agrees with a second implementation of the counts.
        expected = expected_counts(cohort.events)
        assert observed_counts(truth, expected) == expected

        await produce(kafka_bootstrap, settings.events_topic, first)

        # No idle worker: each holds procedures, of its own partitions' sites only.
        async def scrapes(alive: Sequence[WorkerProcess]) -> list[dict[Sample, float]]:
            _alive(alive)
            return list(await asyncio.gather(*map(_polled, alive)))

        busy = await wait_until(
            lambda: scrapes(workers),
            # Held is live; the sites are on the rendered page, which may lag it.
            lambda ss: all(
                sum_by(s, "spinewatch_procedures_held") > 0
                and rendered_all_applied(s)
                and sum_by(s, "spinewatch_health_check_ok", check="metrics-rendered") == 1
                for s in ss
            ),
            120,
            "every worker to hold procedures",
        )
        phase("every worker holds procedures")
        for partitions, samples in zip(owned, busy, strict=True):
            mine = {site for site, p in partition_of.items() if p in (partitions or ())}
            assert _sites_of(samples), "an idle worker"
            assert _sites_of(samples) <= mine
            assert len(mine) == SITES_PER_PARTITION * len(partitions or ()) < len(sites) / 2

        # SIGKILL mid-stream: the victim has applied events, the stream is not over.
        victim, survivors = workers[0], workers[1:]
        applied = [sum_by(s, "spinewatch_events_applied_total") for s in busy]
        victim.kill()
        phase("SIGKILL")
        killed_at = time.monotonic()
        assert applied[0] > 0, applied
        assert sum(applied) < distinct, (applied, distinct)
        await produce(kafka_bootstrap, settings.events_topic, rest)

        await wait_until(
            lambda: _assignments(survivors), _exclusive_cover, 120, "the survivors to take over"
        )
        covered_s = time.monotonic() - killed_at
        phase("the survivors own every partition")
        owned = await _assignments(survivors)
        assert all(len(p or ()) <= math.ceil(PARTITIONS / len(survivors)) for p in owned), owned

        counts_at: list[float] = []  # when the counts first agreed (designs may lag)

        async def differences() -> dict[str, object]:
            now = await scrapes(survivors)
            diff = _differences(truth, now)
            held = [sum_by(s, "spinewatch_procedures_held") for s in now]
            if sum(held) != sum_by(truth, "spinewatch_procedures_held"):
                diff["procedures held"] = (sum_by(truth, "spinewatch_procedures_held"), held)
            counting = ("additive", "ratio", "procedures")
            if not counts_at and not [k for k in diff if k.startswith(counting)]:
                counts_at.append(time.monotonic() - killed_at)
            if any(s.get(("spinewatch_drift_design_pending", frozenset())) != 0 for s in now):
                diff["design pending"] = True
            return diff

        diff = await wait_until(
            differences, lambda d: not d, 180, "the survivors' sum to equal one worker"
        )
        equal_s = time.monotonic() - killed_at
        phase("the survivors' sum equals the single worker")
        assert diff == {}
        final = [await scrape_async(f"{w.url}/metrics") for w in survivors]
        assert _differences(truth, final) == {}
        assert set.union(*map(_sites_of, final)) == set(partition_of)
        assert not set.intersection(*map(_sites_of, final))
        print(
            f"SIGKILL -> survivors own all {PARTITIONS} partitions: {covered_s:.1f} s; "
            f"-> counts equal the single worker: {counts_at[0]:.1f} s, "
            f"every family (drift designs too): {equal_s:.1f} s "
            f"(session timeout {settings.session_timeout_s:g} s)"
        )
    finally:
        truth_task.cancel()  # when a step before it failed
        for process in (*workers, reference):
            process.stop()
