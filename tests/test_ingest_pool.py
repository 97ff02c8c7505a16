"""The ingest pool: child processes give the same result as inline triage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from spinewatch.adapters.state_codec import decode_facts
from spinewatch.engine.ingest import IngestResult, MessageOrigin, ingest_batch
from spinewatch.engine.ingest_pool import IngestPool, _chunks
from tests.support import scaled, wait_until
from tests.test_domain import pathway

ORIGIN = MessageOrigin("events", 0, 7)


def _batch() -> list[tuple[bytes, MessageOrigin]]:
    events = [e for _ in range(4) for e in pathway()]
    bulk = b"[" + b",".join(e.model_dump_json().encode() for e in events) + b"]"
    single = events[0].model_dump_json().encode()
    return [(bulk, ORIGIN), (single, ORIGIN), (b"{oops", ORIGIN)]


def _summary(results: list[IngestResult]) -> tuple[object, ...]:
    facts = sorted(
        (site, procedure_id, fact.event_id)
        for result in results
        for site, raw in result.fact_batches
        for procedure_id, fact in decode_facts(raw)
    )
    letters = [letter.value for result in results for letter in result.dead_letters]
    accepted = sum(
        (result.accepted_by_type for result in results), start=type(results[0].accepted_by_type)()
    )
    return (facts, letters, dict(accepted))


async def test_child_processes_triage_exactly_like_inline() -> None:
    batch = _batch()
    pool = IngestPool(processes=1, chunk_bytes=64)
    await pool.start()
    try:
        pooled = [result async for result in pool.triaged(batch)]
    finally:
        await pool.stop()
    inline = [ingest_batch(batch)]
    assert len(pooled) == 3  # 64-byte chunks: one message each
    assert _summary(pooled) == _summary(inline)
    assert _summary(inline)[1] == [b"{oops"]


async def test_a_dead_child_costs_nothing_the_batch_is_triaged_inline() -> None:
    batch = _batch()
    pool = IngestPool(processes=1, chunk_bytes=1 << 20)
    await pool.start()
    try:
        executor = pool._executor
        assert executor is not None
        for pid in list(executor._processes):  # the spawned, warmed child
            os.kill(pid, signal.SIGKILL)
        results = [result async for result in pool.triaged(batch)]
        assert _summary(results) == _summary([ingest_batch(batch)])
        assert pool._executor is not executor  # replaced for the next batch
        again = [result async for result in pool.triaged(batch)]
        assert _summary(again) == _summary(results)
    finally:
        await pool.stop()


async def test_a_child_that_died_while_idle_costs_nothing_either() -> None:
    # The pool is marked broken before the next batch is submitted: submit
    # itself raises, which once escaped and lost every batch after it.
    batch = _batch()
    pool = IngestPool(processes=1, chunk_bytes=64)
    await pool.start()
    try:
        executor = pool._executor
        assert executor is not None
        for pid in list(executor._processes):
            os.kill(pid, signal.SIGKILL)
        await wait_until(lambda: _now(bool(executor._broken)), bool, 30, "the pool marked broken")
        results = [result async for result in pool.triaged(batch)]
        assert _summary(results) == _summary([ingest_batch(batch)])
        assert pool._executor is not executor
    finally:
        await pool.stop()


async def _now(value: bool) -> bool:
    return value


def test_chunks_keep_order_and_bound_bytes() -> None:
    items = [(bytes(n), ORIGIN) for n in (5, 5, 5, 20, 1)]
    chunks = list(_chunks(items, 10))
    assert [[len(b) for b, _ in chunk] for chunk in chunks] == [[5, 5], [5], [20], [1]]
    assert [item for chunk in chunks for item in chunk] == items


def test_a_worker_whose_main_module_cannot_be_reimported_triages_inline() -> None:
    # Spawned children re-import the parent's __main__: from stdin they cannot.
    script = (
        "import asyncio\n"
        "from spinewatch.engine.ingest_pool import IngestPool\n"
        "async def main():\n"
        "    pool = IngestPool(1, 1 << 20)\n"
        "    await pool.start()\n"
        "    print('inline' if pool._executor is None else 'pooled')\n"
        "    await pool.stop()\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=True,
    )
    assert done.stdout.strip() == "inline"
    assert "triaging inline instead" in done.stderr


def _collector_state() -> tuple[bool, bool]:
    import gc  # noqa: PLC0415 - runs in the child

    return gc.isenabled(), gc.get_freeze_count() > 0


async def test_children_run_without_automatic_collection() -> None:
    # The children collect once per chunk instead (see `_triage_chunk`).
    pool = IngestPool(processes=1, chunk_bytes=1 << 20)
    await pool.start()
    try:
        executor = pool._executor
        assert executor is not None
        assert executor.submit(_collector_state).result(timeout=scaled(30)) == (False, True)
        batch = _batch()
        results = [result async for result in pool.triaged(batch)]
        assert _summary(results) == _summary([ingest_batch(batch)])
    finally:
        await pool.stop()
