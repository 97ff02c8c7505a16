"""A fix for faust-streaming's hand-over from table recovery to the streams.

When a worker has recovered its tables after a rebalance, faust (0.15.3,
the newest release: `Recovery.on_recovery_completed`, and `_resume_streams`
when no table needs recovery) does three things in this order:

1. resumes fetching from the stream partitions (the events and facts topics);
2. awaits the seek of those partitions to their committed offsets;
3. resumes flow control, which clears every stream's inbound queue.

Fetching is live from step 1, and flow control has been active since table
recovery began, so records at the committed offset can reach a stream's
queue before step 3 clears it. The consumer has already counted them as
read, so nothing reads them again: they are never processed. Worse, faust
then treats the hole as done (its gap bookkeeping marks skipped offsets as
acknowledged, and its commit check lets a one-offset hole at the committed
offset through), so the next commit moves past them for good.

That is how the SIGKILL-restart exactness test lost an event now and then
under CPU load. With faust instrumented, a worker restarted onto a backlog
showed it plainly: the record at offset 198 of an events partition reached
the ingest stream's queue 1 ms before the clear, was cleared, and no batch
the agent took ever held it (tests/test_faust_recovery.py restarts a worker
that way; without this fix it failed 5 times in 5, 3 of them with events
missing from the counts).

The fix defers step 1 for the stream partitions until faust's step has
returned, that is after the seek and after the queues were cleared. The
first record a stream then sees is the one at the committed offset.
Changelog partitions are not deferred: recovery reads them itself.

That alone exposed a second fault, which faust's own order happened to
hide. faust hands aiokafka its live set of active partitions for each
fetch, and aiokafka reads that set while it waits, taking an empty set to
mean every partition. When recovery ends, faust pauses the changelog
partitions, which empties the set while a fetch waits; aiokafka then
returns records of the paused stream partitions, faust drops them as not
active, and aiokafka's positions have moved past them (seen with aiokafka
instrumented: 2,300-2,474 records of each events partition, during the
step). Before the seek that is harmless; after it, nothing rewinds them,
and restarted workers missed whole partitions (one never received a
record of one events partition, another of any). So each fetch gets a
snapshot of the set, and an empty snapshot fetches nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from faust.tables.recovery import Recovery
from faust.transport.consumer import ThreadDelegateConsumer
from faust.types import TP

_Step = Callable[..., Awaitable[None]]

# faust's own methods, wrapped below.
faust_on_recovery_completed: _Step = Recovery.on_recovery_completed
faust_resume_streams: _Step = Recovery._resume_streams
faust_getmany = ThreadDelegateConsumer._getmany


def _resuming_streams_last(step: _Step) -> _Step:
    async def wrapped(self: Any, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        resume = consumer.resume_partitions  # the bound method of faust's class
        deferred: set[TP] = set()

        def resume_changelogs_now(partitions: Iterable[TP]) -> None:
            partitions = set(partitions)
            streams = {tp for tp in partitions if not consumer._is_changelog_tp(tp)}
            deferred.update(streams)
            if partitions - streams:
                resume(partitions - streams)

        # An instance attribute shadows the method for this step only.
        consumer.resume_partitions = resume_changelogs_now
        try:
            await step(self, generation_id)
        finally:
            del consumer.resume_partitions
        # Not reached when the step raised (another rebalance began, or the
        # worker stops): the next assignment resumes what it is given.
        if deferred:
            resume(deferred)

    return wrapped


async def _getmany_of_a_snapshot(
    self: Any,
    active_partitions: set[TP] | None,
    timeout: float,  # noqa: ASYNC109 - faust's signature
) -> Any:
    if active_partitions is None:  # a client-only app: every partition
        return await faust_getmany(self, None, timeout)
    snapshot = set(active_partitions)
    if not snapshot:
        return {}
    return await faust_getmany(self, snapshot, timeout)


def apply_recovery_fix() -> None:
    """Idempotent (it always wraps faust's own methods); run before the first rebalance."""
    Recovery.on_recovery_completed = _resuming_streams_last(  # type: ignore[method-assign,assignment]
        faust_on_recovery_completed
    )
    Recovery._resume_streams = _resuming_streams_last(  # type: ignore[method-assign,assignment]
        faust_resume_streams
    )
    ThreadDelegateConsumer._getmany = _getmany_of_a_snapshot  # type: ignore[method-assign]
