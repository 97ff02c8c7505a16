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
collect once per chunk instead (see `_triage_chunk`).

A chunk whose triage fails as a whole (a child that crashed, or an
exception that escaped `ingest_batch`) is triaged again one message at a
time, in a fresh pool: the messages that pass count as usual, and a
message that fails on its own is dead-lettered as `internal_error`. So a
message that kills a child process costs one dead letter, never the
stream, and is never triaged inline where it could kill the worker.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from spinewatch.engine.ingest import (
    DEFAULT_LIMITS,
    IngestLimits,
    IngestResult,
    MessageOrigin,
    ingest_batch,
    internal_error_result,
)
from spinewatch.runtime.lifetime import die_with_parent

log = logging.getLogger(__name__)

Batch = list[tuple[bytes, MessageOrigin]]


class IngestPool:
    def __init__(
        self, processes: int, chunk_bytes: int, limits: IngestLimits = DEFAULT_LIMITS
    ) -> None:
        self.processes = processes
        self.chunk_bytes = chunk_bytes
        self.limits = limits
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
                    loop.run_in_executor(self._executor, _triage_chunk, [], self.limits)
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
                yield self._inline(chunk)
            return
        loop = asyncio.get_running_loop()
        executor = self._executor
        pending = [self._submit(loop, chunk) for chunk in chunks]
        for chunk, future in zip(chunks, pending, strict=True):
            try:
                yield await future
            except Exception as exc:  # the chunk is retried message by message
                log.error("triage of a chunk failed (%s); retrying it per message", _kind(exc))
                self._renew_if_broken(exc, executor)
                for one in chunk:
                    yield await self._one(loop, one)

    def _inline(self, chunk: Batch) -> IngestResult:
        try:
            return ingest_batch(chunk, self.limits)
        except Exception:  # as in a child: then one message at a time
            return _merged(_inline_one(message, self.limits) for message in chunk)

    def _submit(
        self, loop: asyncio.AbstractEventLoop, chunk: Batch
    ) -> asyncio.Future[IngestResult]:
        try:
            if self._executor is None:  # replaced moments ago and gone again: stopping
                raise BrokenProcessPool("the ingest pool is stopped")
            return loop.run_in_executor(self._executor, _triage_chunk, chunk, self.limits)
        except (BrokenProcessPool, RuntimeError) as exc:
            # A child that died while the pool was idle marks it broken, and
            # submit raises at once: hand the failure to the caller's
            # per-chunk handling (renew, then per message) like any other.
            failed: asyncio.Future[IngestResult] = loop.create_future()
            failed.set_exception(exc)
            return failed

    async def _one(
        self, loop: asyncio.AbstractEventLoop, message: tuple[bytes, MessageOrigin]
    ) -> IngestResult:
        executor = self._executor
        try:
            return await self._submit(loop, [message])
        except Exception as exc:  # this message alone fails: dead-letter it
            self._renew_if_broken(exc, executor)
            raw, origin = message
            return internal_error_result(raw, origin, exc, self.limits)

    def _renew_if_broken(self, exc: BaseException, broken: ProcessPoolExecutor | None) -> None:
        # Every future of a broken pool fails; only the first replaces it.
        if isinstance(exc, BrokenProcessPool) and broken is self._executor is not None:
            log.error("an ingest process died; replacing the pool")
            # Not cancel_futures: a chunk's future cancelled here would raise
            # CancelledError in `triaged`, which no per-chunk handler catches;
            # the broken pool fails every pending future by itself.
            self._executor.shutdown(wait=False)
            self._executor = self._new_executor()

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


def _kind(exc: BaseException) -> str:
    return type(exc).__name__


def _inline_one(message: tuple[bytes, MessageOrigin], limits: IngestLimits) -> IngestResult:
    try:
        return ingest_batch([message], limits)
    except Exception as exc:  # this message alone fails: dead-letter it
        return internal_error_result(*message, exc, limits)


def _merged(results: Iterator[IngestResult]) -> IngestResult:
    merged = IngestResult()
    for result in results:
        merged.fact_batches += result.fact_batches
        merged.dead_letters += result.dead_letters
        merged.messages_by_path.update(result.messages_by_path)
        merged.accepted_by_type.update(result.accepted_by_type)
        merged.rejected_by_reason.update(result.rejected_by_reason)
    return merged


def _triage_chunk(chunk: Batch, limits: IngestLimits) -> IngestResult:  # pragma: no cover
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
        return ingest_batch(chunk, limits)
    finally:
        gc.collect()
