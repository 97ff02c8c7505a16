"""End-to-end: `spinewatch replay` interrupted for real, resumed, each event counted once.

One outcomes worker and one gateway are shared by the module (a worker
takes 15-30 s to start), on the session's real broker and a Redis of the
module's own. Each test writes a file of real events with rejects and
in-file duplicates in it, runs `python -m spinewatch replay` as a child
process, stops it once the state file shows part of the file confirmed
(SIGKILL straight to Kafka, SIGINT through the gateway), runs the same
command again, and then checks three independent tallies: the replay's
summary, the rejects file, and the worker's own metrics (events applied
once, and the cohort counts of tests/expectation.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from signal import SIGINT, SIGKILL
from typing import Any

import pytest
import pytest_asyncio

from spinewatch.contracts import parse_event
from spinewatch.demo.synthetic.cohort import SiteProfile, default_sites, encode, generate_cohort
from spinewatch.errors import InvalidEvent
from spinewatch.gateway.auth import SourceGrant
from tests.expectation import expected_counts, observed_counts
from tests.gateways import (
    Credentials,
    RunningGateway,
    gateway_settings,
    running_gateway,
    write_credentials,
)
from tests.support import (
    running_worker,
    scaled,
    scrape_async,
    sum_by,
    wait_until,
    worker_settings,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

GATEWAY_SITE = "replay-north"
GATEWAY_SOURCE = "registry-north"
GATEWAY_MAX_BATCH = 40  # the replay asks for 100: the gateway's 413 halves its batches
NAME = "Jane Doe 1961-03-02"  # in a rejected line; must never reach the rejects file
PSEUDONYM_KEY = "replay-tests-pseudonym-key-0123456789abcdef"
BUNDLE = Path(__file__).resolve().parents[1] / "schemas" / "examples" / "fhir" / "bundle.json"


@dataclass
class Deployment:
    bootstrap: str
    app_id: str
    worker_url: str
    gateway: RunningGateway


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    grant = SourceGrant(source=GATEWAY_SOURCE, sites=(GATEWAY_SITE,))
    return write_credentials(tmp_path_factory.mktemp("credentials"), {"north": grant})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployment(
    kafka_bootstrap: str, module_redis: str, credentials: Credentials
) -> AsyncIterator[Deployment]:
    app_id = f"r{uuid.uuid4().hex[:12]}"
    # One process fewer on a 2-core machine (validation inline); no charts.
    worker = worker_settings(kafka_bootstrap, app_id, ingest_processes=0, drift_metrics=())
    settings = gateway_settings(
        kafka_bootstrap, module_redis, credentials, app_id=app_id,
        max_batch_events=GATEWAY_MAX_BATCH, pseudonym_key=PSEUDONYM_KEY,
    )  # fmt: skip
    async with (
        running_worker(worker, kafka_bootstrap) as running,
        running_gateway(settings, credentials) as gateway,
    ):
        yield Deployment(kafka_bootstrap, app_id, running.metrics.url, gateway)


# --- the input file -----------------------------------------------------------------------


@dataclass(frozen=True)
class Replayed:
    """A file's lines and what the replay must make of them."""

    lines: list[bytes]
    events: list[dict[str, Any]]  # distinct valid events, each once
    rejected: list[int]  # 1-based line numbers that break their contract
    duplicates: int  # exact copies of an earlier line
    forbidden: list[int]  # valid, but not this credential's site


def build_file(events: Sequence[dict[str, Any]]) -> Replayed:
    """The events, with rejects and copies mixed in at fixed places."""
    lines = [encode(e) for e in events]
    bad_field = dict(events[5]) | {"vas_score": 3}
    named = dict(events[7]) | {NAME: 1}
    wrong_type = dict(events[9]) | {"event_id": "not-a-uuid"}
    inserts = {
        len(lines) // 5: b"{not json",
        len(lines) // 4: encode(bad_field),
        len(lines) // 2: encode(named),
        len(lines) - 3: encode(wrong_type),
    }
    copies = {len(lines) // 3: lines[2], (2 * len(lines)) // 3: lines[len(lines) // 2]}
    out: list[bytes] = []
    rejected: list[int] = []
    for i, line in enumerate(lines):
        if i in inserts:
            out.append(inserts[i])
            rejected.append(len(out))
        if i in copies:
            out.append(copies[i])
        out.append(line)
    return Replayed(out, list(events), rejected, len(copies), [])


def cohort_events(seed: int, sites: Sequence[SiteProfile]) -> list[dict[str, Any]]:
    cohort = generate_cohort(seed, sites, duplicate_share=0, malformed=0)
    return [dict(e) for e in cohort.events]


# --- running the command ------------------------------------------------------------------


def replay_command(path: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "spinewatch", "replay", str(path), "--quiet", "--json",
            *options]  # fmt: skip


async def run_to_end(command: list[str], env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), scaled(120))
    assert process.returncode is not None
    assert out, err.decode()
    return process.returncode, json.loads(out)


async def interrupt_midway(
    command: list[str],
    env: dict[str, str],
    state: Path,
    total: int,
    stop: Callable[[asyncio.subprocess.Process], None],
) -> tuple[int, dict[str, Any]]:
    """Start the replay, `stop` it once a third of the file is confirmed: its exit code and state."""
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:

        async def confirmed() -> int:
            if process.returncode is not None:
                return total  # finished (too early): the assertion below says so
            return int(file_state(state).get("confirmed", 0))

        seen = await wait_until(confirmed, lambda n: n >= total // 3, 60, "partial progress")
        assert seen < total, "the replay finished before it could be interrupted"
        stop(process)
        await asyncio.wait_for(process.communicate(), scaled(60))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, file_state(state)


def file_state(state: Path) -> dict[str, Any]:
    """The one input file's progress in a state file (empty before the first write)."""
    try:
        files = json.loads(state.read_bytes())["files"]
    except (OSError, ValueError, KeyError):
        return {}
    (progress,) = files.values() if files else ({},)
    return dict(progress)


def first_sends(lines: Sequence[bytes], start: int, end: int) -> int:
    """Records in [start, end) that a run sends: valid, and the first of their event_id."""
    first: dict[str, int] = {}
    for i, line in enumerate(lines):
        try:
            event = parse_event(line)
        except InvalidEvent:
            continue
        first.setdefault(str(event.event_id), i)
    return sum(1 for i in first.values() if start <= i < end)


# --- what the worker counted --------------------------------------------------------------


async def engine_totals(d: Deployment) -> dict[str, float]:
    samples = await scrape_async(f"{d.worker_url}/metrics")
    return {
        "applied": sum_by(samples, "spinewatch_events_applied_total"),
        "duplicate": sum_by(samples, "spinewatch_events_duplicate_total"),
        "deadlettered": sum_by(samples, "spinewatch_events_deadlettered_total"),
    }


async def wait_for_cohorts(d: Deployment, events: Sequence[dict[str, Any]]) -> None:
    expected = expected_counts(events)

    async def observed() -> Any:
        return observed_counts(await scrape_async(f"{d.worker_url}/metrics"), expected)

    counted = await wait_until(observed, lambda o: o == expected, 60, "the cohort counts")
    assert counted == expected


def lines_at(numbers: Sequence[int]) -> list[str]:
    return [f"line {n}" for n in numbers]


def check_rejects(path: Path, positions: list[str], statuses: set[str]) -> list[Any]:
    """The rejects file holds exactly these positions, and no value of the input."""
    text = path.read_text()
    rejects = [json.loads(line) for line in text.splitlines()]
    assert sorted(r["position"] for r in rejects) == sorted(positions)
    assert {r["status"] for r in rejects} <= statuses
    assert NAME not in text
    assert 'patient_ref": "' not in text
    return rejects


# --- the tests ----------------------------------------------------------------------------


async def test_to_kafka_killed_and_resumed_counts_each_event_once(
    deployment: Deployment, tmp_path: Path
) -> None:
    replayed = build_file(cohort_events(21, default_sites(900)))
    path = tmp_path / "backfill.jsonl"
    path.write_bytes(b"\n".join(replayed.lines) + b"\n")
    state = tmp_path / "backfill.jsonl.replay-state.json"
    command = replay_command(
        path, "--to", "kafka", "--brokers", deployment.bootstrap, "--app-id", deployment.app_id,
        "--batch-size", "50",
    )  # fmt: skip
    before = await engine_totals(deployment)

    code, killed = await interrupt_midway(
        command, dict(os.environ), state, len(replayed.lines), lambda p: p.send_signal(SIGKILL)
    )
    assert code == -SIGKILL
    assert 0 < killed["confirmed"] < len(replayed.lines)

    code, summary = await run_to_end(command, dict(os.environ))
    assert code == 1, summary  # some lines were rejected
    window = first_sends(replayed.lines, killed["confirmed"], killed["sent_until"])
    assert summary["total"] == {
        "accepted": len(replayed.events),
        "duplicate": replayed.duplicates,
        "conflict": 0,
        "rejected": len(replayed.rejected),
        "forbidden": 0,
        "resent": window,
    }
    check_rejects(
        tmp_path / "backfill.jsonl.rejects.jsonl", lines_at(replayed.rejected), {"rejected"}
    )

    await wait_for_cohorts(deployment, replayed.events)
    after = await engine_totals(deployment)
    assert after["applied"] - before["applied"] == len(replayed.events)
    assert after["deadlettered"] == before["deadlettered"], "a reject reached Kafka"
    # Only records of the killed run's unanswered chunk can reach the worker twice.
    assert 0 <= after["duplicate"] - before["duplicate"] <= window


async def test_through_the_gateway_interrupted_and_resumed_counts_each_event_once(
    deployment: Deployment, tmp_path: Path
) -> None:
    site = SiteProfile(
        site_id=GATEWAY_SITE, procedures=300, case_mix=default_sites(10)[0].case_mix, operators=2
    )
    events = [e | {"source": GATEWAY_SOURCE} for e in cohort_events(22, [site])]
    replayed = build_file(events)
    # Two valid events of a site this credential may not write.
    strangers = [
        dict(events[i]) | {"event_id": str(uuid.uuid4()), "site_id": "replay-south"}
        for i in (11, 12)
    ]
    lines = [*replayed.lines, *(encode(e) for e in strangers)]
    forbidden = [len(lines) - 1, len(lines)]
    path = tmp_path / "backfill.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    state = tmp_path / "backfill.jsonl.replay-state.json"
    token_file = tmp_path / "token"
    token_file.write_text(deployment.gateway.token("north") + "\n")
    command = replay_command(
        path, "--to", "gateway", "--url", deployment.gateway.url, "--token-file", str(token_file),
        "--batch-size", "100",
    )  # fmt: skip
    assert deployment.gateway.token("north") not in " ".join(command)
    before = await engine_totals(deployment)

    code, stopped = await interrupt_midway(
        command, dict(os.environ), state, len(lines), lambda p: p.send_signal(SIGINT)
    )
    assert code == 130
    assert 0 < stopped["confirmed"] < len(lines)

    code, summary = await run_to_end(command, dict(os.environ))
    assert code == 1, summary  # rejected and forbidden lines
    window = first_sends(lines, stopped["confirmed"], stopped["sent_until"])
    assert summary["total"] == {
        "accepted": len(replayed.events),
        "duplicate": replayed.duplicates,
        "conflict": 0,
        "rejected": len(replayed.rejected),
        "forbidden": len(forbidden),
        "resent": window,
    }
    rejects = check_rejects(
        tmp_path / "backfill.jsonl.rejects.jsonl",
        lines_at(replayed.rejected + forbidden),
        {"rejected", "forbidden"},
    )
    assert sum(1 for r in rejects if r["status"] == "forbidden") == len(forbidden)

    await wait_for_cohorts(deployment, replayed.events)
    after = await engine_totals(deployment)
    assert after["applied"] - before["applied"] == len(replayed.events)
    assert after["deadlettered"] == before["deadlettered"]
    # The gateway writes an event once, however often the replay sends it.
    assert after["duplicate"] == before["duplicate"]


async def test_a_fhir_bundle_through_either_door_gives_the_same_events(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Mapped by the gateway, then here with the same key: the same event ids, counted once."""
    token_file = tmp_path / "token"
    token_file.write_text(deployment.gateway.token("north"))
    key_file = tmp_path / "pseudonym-key"
    key_file.write_text(PSEUDONYM_KEY + "\n")
    before = await engine_totals(deployment)

    through_gateway = replay_command(
        BUNDLE, "--to", "gateway", "--url", deployment.gateway.url, "--token-file",
        str(token_file), "--rejects", str(tmp_path / "gateway.rejects.jsonl"),
        "--state", str(tmp_path / "gateway.state.json"),
    )  # fmt: skip
    code, summary = await run_to_end(through_gateway, dict(os.environ))
    assert code == 0, summary
    mapped = summary["total"]["accepted"]
    assert mapped >= 5  # procedures, follow-ups and a complication of the example bundle
    assert summary["total"] == {
        "accepted": mapped, "duplicate": 0, "conflict": 0, "rejected": 0, "forbidden": 0,
        "resent": 0,
    }  # fmt: skip
    # Run again: the state says the bundle is done; nothing is sent, the same summary.
    assert await run_to_end(through_gateway, dict(os.environ)) == (0, summary)

    to_kafka = replay_command(
        BUNDLE, "--to", "kafka", "--brokers", deployment.bootstrap, "--app-id",
        deployment.app_id, "--site-id", GATEWAY_SITE, "--source", GATEWAY_SOURCE,
        "--pseudonym-key-file", str(key_file), "--rejects", str(tmp_path / "kafka.rejects.jsonl"),
        "--state", str(tmp_path / "kafka.state.json"),
    )  # fmt: skip
    code, summary = await run_to_end(to_kafka, dict(os.environ))
    assert code == 0, summary
    assert summary["total"]["accepted"] == mapped

    async def counted() -> dict[str, float]:
        totals = await engine_totals(deployment)
        return {name: totals[name] - before[name] for name in totals}

    # The broker took every event twice; the worker applied each once.
    final = await wait_until(
        counted, lambda c: c["applied"] + c["duplicate"] >= 2 * mapped, 60, "both copies"
    )
    assert final == {"applied": mapped, "duplicate": mapped, "deadlettered": 0}


async def test_a_csv_export_is_replayed_as_events(deployment: Deployment, tmp_path: Path) -> None:
    """The documented flat CSV: one row per event, levels in one cell, a bad row rejected."""
    # The unit tests' rows, one per column group of the documentation.
    from tests.test_replay import (  # noqa: PLC0415
        COMPLICATION_ROW,
        FOLLOWUP_ROW,
        PROCEDURE_ROW,
        write_csv,
    )

    procedure = str(uuid.uuid4())
    ids = {"procedure_id": procedure, "site_id": "replay-csv"}
    rows = [
        row | ids | {"event_id": str(uuid.uuid4())}
        for row in (PROCEDURE_ROW, FOLLOWUP_ROW, COMPLICATION_ROW)
    ]
    bad = FOLLOWUP_ROW | ids | {"event_id": str(uuid.uuid4()), "vas": NAME}
    path = write_csv(tmp_path / "export.csv", [*rows, bad])
    before = await engine_totals(deployment)
    command = replay_command(
        path, "--to", "kafka", "--brokers", deployment.bootstrap, "--app-id", deployment.app_id
    )
    code, summary = await run_to_end(command, dict(os.environ))
    assert code == 1, summary
    assert (summary["total"]["accepted"], summary["total"]["rejected"]) == (3, 1)
    [reject] = check_rejects(tmp_path / "export.csv.rejects.jsonl", ["row 5"], {"rejected"})
    assert [e["loc"] for e in reject["errors"]] == ["vas"]

    async def applied() -> float:
        return (await engine_totals(deployment))["applied"] - before["applied"]

    assert await wait_until(applied, lambda n: n >= 3, 60, "the CSV's events") == 3
