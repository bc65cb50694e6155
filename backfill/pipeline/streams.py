"""Memory-object streams without a trip through the event loop when none is needed.

anyio's send() and receive() yield to the event loop every time (a checkpoint),
even when the item can go or come at once. In the pipeline they run once per key
or per copy, thousands of times a second, and the task always reaches a real
wait (a request, a full or empty stream) soon after; these helpers yield only then.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

T = TypeVar("T")


async def send(stream: MemoryObjectSendStream[T], item: T) -> None:
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)


async def receive_all(stream: MemoryObjectReceiveStream[T]) -> AsyncIterator[T]:
    """The stream's items until it is closed and empty (does not close it)."""
    while True:
        try:
            item = stream.receive_nowait()
        except anyio.WouldBlock:
            try:
                item = await stream.receive()
            except anyio.EndOfStream:
                return
        except anyio.EndOfStream:
            return
        yield item
