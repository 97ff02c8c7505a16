"""Work-arounds for the Tansu broker, applied only when `tansu_compat` is on.

1. Tansu hands out consumer-group generation 0, and aiokafka only sends
   LeaveGroup for generations above 0. A stopping worker then silently stays
   in the group until its session times out, and the partitions it held sit
   idle that long. The patched method leaves for any joined generation.
2. Tansu's ListOffsets answers "latest" with the base offset of the last
   record batch plus one, not the last offset plus one. faust reads a
   changelog up to that offset when it recovers a table, so records batched
   together at the end would be skipped. Keeping every produced record in a
   batch of its own (`producer_max_batch_size`) makes the answer exact; it
   costs little because spinewatch writes one changelog segment per fact
   batch, not one record per event.
3. A fetch that finds no new data on Tansu can sit out most of its maximum
   wait even after records arrive, and faust fixes that wait at 1.5 s. In a
   two-hop pipeline (events -> facts) the second hop then stalls for up to
   1.5 s at a time: measured on the bulk benchmark, 22k ev/s with 1.5 s,
   35k ev/s with 20 ms. The worker consumer is given a short wait instead.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.consumer import group_coordinator
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

log = logging.getLogger(__name__)

# One record per produced batch: see point 2 above.
SINGLE_RECORD_BATCH_BYTES = 16

# Longest a fetch waits for records: see point 3 above.
FETCH_MAX_WAIT_MS = 20

_UNKNOWN_MEMBER_ID = ""
_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer


async def _leave_group_from_any_generation(self: Any) -> None:
    if self.member_id != _UNKNOWN_MEMBER_ID and self._group_instance_id is None:
        try:
            await self._send_req(LeaveGroupRequest(self.group_id, self.member_id))
        except KafkaError as exc:
            log.warning("LeaveGroup request failed: %s", exc)
    self.reset_generation()


def _worker_consumer_with_short_fetch_wait(self: Any, transport: Any) -> Any:
    consumer = _create_worker_consumer(self, transport)
    # Read by the fetcher that AIOKafkaConsumer.start() creates.
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
    return consumer


def apply_tansu_compat() -> None:
    """Idempotent: patch aiokafka and faust for Tansu (points 1 and 3)."""
    coordinator = group_coordinator.GroupCoordinator
    coordinator._maybe_leave_group = _leave_group_from_any_generation
    AIOKafkaConsumerThread._create_worker_consumer = _worker_consumer_with_short_fetch_wait  # type: ignore[method-assign]
