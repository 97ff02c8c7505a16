"""Starting and stopping aiokafka clients so that none outlives its owner.

A client left running keeps reconnecting to a broker, even one long gone,
and its connections and tasks keep an interpreter from exiting cleanly.
`started` starts a client inside the try (a start cut short has already
opened connections and its metadata task) and stops it however the block
ends. `stop_client` also covers an aiokafka 0.14 quirk: a consumer's
`stop()` cancels tasks of its own and then awaits them, which raises
CancelledError when such a task never ran, before the fetcher and the
connections are closed (seen in the test suite's topic audit).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer


class Client(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


C = TypeVar("C", bound=Client)


@contextlib.asynccontextmanager
async def started(client: C) -> AsyncIterator[C]:
    """`client` (an aiokafka producer or consumer) started, and stopped however the block ends."""
    try:
        await client.start()
        yield client
    finally:
        await stop_client(client)


async def stop_client(client: Any) -> None:
    """Stop an aiokafka producer or consumer in whatever state it is."""
    task = asyncio.current_task()
    cancels = task.cancelling() if task else 0
    try:
        await client.stop()
    except asyncio.CancelledError:
        if task is None or task.cancelling() > cancels:
            raise  # this task was cancelled (again) while stopping
        if isinstance(client, AIOKafkaConsumer):
            if client._fetcher is not None:
                with contextlib.suppress(asyncio.CancelledError):  # the same again
                    await client._fetcher.close()
            await client._client.close()
