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
   costs little because spinewatch writes one changelog record per shard
   per batch, not one per event.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.consumer import group_coordinator
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest

log = logging.getLogger(__name__)

# One record per produced batch: see point 2 above.
SINGLE_RECORD_BATCH_BYTES = 16

_UNKNOWN_MEMBER_ID = ""


async def _leave_group_from_any_generation(self: Any) -> None:
    if self.member_id != _UNKNOWN_MEMBER_ID and self._group_instance_id is None:
        try:
            await self._send_req(LeaveGroupRequest(self.group_id, self.member_id))
        except KafkaError as exc:
            log.warning("LeaveGroup request failed: %s", exc)
    self.reset_generation()


def apply_tansu_compat() -> None:
    """Idempotent: patch aiokafka's group coordinator for Tansu (point 1)."""
    coordinator = group_coordinator.GroupCoordinator
    coordinator._maybe_leave_group = _leave_group_from_any_generation
