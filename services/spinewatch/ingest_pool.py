"""Where `ingest_batch` runs: inline, or in child processes.

Validating events against their contracts is most of the CPU a bulk batch
costs (pydantic, ~6-8 us per event), and it is pure: bytes in, encoded fact
batches and dead letters out. Running it in a child process lets the
worker's event loop apply the previous batch to the state on another core
meanwhile; the agent still awaits each batch before its offsets can be
committed, so at-least-once delivery is unchanged.

Children are spawned (a fork would copy the running event loop and the
broker connections), warmed before the worker reports ready, and told to
die with the worker. They run with automatic garbage collection off and
collect once per chunk instead (see `_triage_chunk`). A child that crashes
breaks the pool: the batch is then triaged inline and the pool replaced, so
nothing is lost.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from spinewatch.adapters.lifetime import die_with_parent
from spinewatch.ingest import IngestResult, MessageOrigin, ingest_batch

log = logging.getLogger(__name__)

Batch = list[tuple[bytes, MessageOrigin]]


class IngestPool:
    def __init__(self, processes: int, chunk_bytes: int) -> None:
        self.processes = processes
        self.chunk_bytes = chunk_bytes
        self._executor: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        if self.processes == 0:
            return
        self._executor = self._new_executor()
        loop = asyncio.get_running_loop()
        # Import the contracts in every child now, not on the first batch.
        try:
            await asyncio.gather(
                *(
                    loop.run_in_executor(self._executor, _triage_chunk, [])
                    for _ in range(self.processes)
                )
            )
        except BrokenProcessPool:
            # A spawned child re-imports the parent's __main__; when that is
            # impossible (a REPL, stdin) the worker still runs, inline.
            log.error("ingest processes could not start; triaging inline instead")
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def triaged(self, batch: Batch) -> AsyncIterator[IngestResult]:
        """Results of the batch's chunks, in order.

        Every chunk is queued at once, so a child works through them back to
        back while the event loop applies and publishes earlier results.
        """
        chunks = list(_chunks(batch, self.chunk_bytes))
        if self._executor is None:
            for chunk in chunks:
                yield ingest_batch(chunk)
            return
        loop = asyncio.get_running_loop()
        pending = [loop.run_in_executor(self._executor, _triage_chunk, c) for c in chunks]
        for chunk, future in zip(chunks, pending, strict=True):
            yield await self._result(future, chunk)

    async def _result(self, future: asyncio.Future[IngestResult], chunk: Batch) -> IngestResult:
        try:
            return await future
        except BrokenProcessPool:
            log.error("an ingest process died; triaging a chunk inline and replacing the pool")
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            return ingest_batch(chunk)

    async def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_child,
        )


def _chunks(batch: Batch, limit_bytes: int) -> Iterator[Batch]:
    """Consecutive runs of messages of at most `limit_bytes` (one message may exceed it)."""
    chunk: Batch = []
    size = 0
    for item in batch:
        if chunk and size + len(item[0]) > limit_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += len(item[0])
    if chunk:
        yield chunk


def _start_child() -> None:  # pragma: no cover - in the child
    die_with_parent()
    # Objects alive now (modules, the contracts' validators) are never garbage.
    gc.freeze()
    gc.disable()


def _triage_chunk(chunk: Batch) -> IngestResult:  # pragma: no cover - in the child
    """`ingest_batch`, then one collection over what the chunk left behind.

    A chunk holds a few thousand validated events alive at once. With
    automatic collection on, the collector runs every few hundred events and
    walks all of them again each time, and since the start-up objects are
    frozen, almost every full collection is due. Measured in two child
    processes on the benchmark's 191,314 events, alternating runs: 17.5-17.7
    us of CPU per event with the collector at a 10,000 threshold, 14.1-17.0
    us this way. The events die by
    reference counting when `ingest_batch` returns; the collection then
    finds any cycles left (a validation error's traceback, say) in a
    nearly empty heap, so memory stays bounded.
    """
    try:
        return ingest_batch(chunk)
    finally:
        gc.collect()
