"""The proxy's cheap path: connections relayed byte for byte with a delay, on asyncio protocols.

Used by testbed/proxy.py when there is nothing to inject (no faults, no `inspect`):
a benchmark runs the proxy beside the server, on the server's core, so this path
has no task per connection or per read, no parsing, and one timer per direction.
Every byte is delivered RTT/2 after it was read, and a new connection's first
bytes wait one more RTT (the handshake a real client would have waited for).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import cast


class RelayServer:
    """A listening socket whose connections are relayed to `upstream` with `rtt` seconds of round trip.

    `count(name)` is called once per accepted connection ("connections") and per
    failed connection upstream ("upstream_connect_errors").
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, upstream: tuple[str, int], rtt: float, count: Callable[[str], None]
    ) -> None:
        self.loop = loop
        self.upstream = upstream
        self.rtt = rtt
        self.count = count
        self.live: set[_Relay] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port); the port it listens on."""

        def accepted() -> _RelaySide:
            relay = _Relay(self, self.loop)
            self.live.add(relay)
            self.count("connections")
            relay.task = self.loop.create_task(relay.connect())
            return relay.client

        self._server = await self.loop.create_server(accepted, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    def close(self) -> None:
        """Stop listening and abort every connection still relayed."""
        if self._server is not None:
            self._server.close()
        for relay in list(self.live):
            relay.abort()
        self.live.clear()


class _Direction:
    """Bytes one way through the relay: each piece written `delay` after it arrived, in order, by one timer."""

    HIGH_WATER = 16 * 1024 * 1024  # bytes in the delay line before the sending side is paused

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, src: _RelaySide, dst: _RelaySide) -> None:
        self.loop = loop
        self.delay = delay
        self.src = src
        self.dst = dst
        self.queue: deque[tuple[float, bytes | None]] = deque()  # None: end of stream, after what came before
        self.queued = 0
        self.not_before = 0.0  # nothing leaves before this (a new connection's handshake)
        self.timer: asyncio.TimerHandle | None = None

    def push(self, data: bytes | None) -> None:
        now = self.loop.time()
        due = max(now, self.not_before) + self.delay
        if data is not None and due <= now and not self.queue and self.dst.transport is not None:
            self.dst.transport.write(data)  # no delay: straight through
            return
        self.queue.append((due, data))
        if data is not None:
            self.queued += len(data)
            if self.queued > self.HIGH_WATER:
                self.src.pause()
        self.arm()

    def arm(self) -> None:
        if self.timer is None and self.queue and self.dst.transport is not None:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        t = self.dst.transport
        if t is None or t.is_closing():
            return
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if data is None:
                self.dst.end_out()
                return
            self.queued -= len(data)
            t.write(data)
        if self.queued <= self.HIGH_WATER:
            self.src.resume()
        self.arm()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _RelaySide(asyncio.Protocol):
    """One socket of a relayed connection; what it receives goes into `out`, towards the other socket."""

    def __init__(self, relay: _Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.out: _Direction
        self.paused = False
        self.eof_in = False  # its peer sent FIN
        self.eof_out = False  # we sent it FIN

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.out.push(data)

    def eof_received(self) -> bool:
        self.eof_in = True
        self.out.push(None)  # half-close the other socket once the delayed bytes are out
        self._close_if_done()
        return True

    def end_out(self) -> None:
        if self.transport is not None and not self.eof_out:
            self.eof_out = True
            self.transport.write_eof()
            self._close_if_done()

    def _close_if_done(self) -> None:
        if self.eof_in and self.eof_out and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.lost(self, exc)

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = False
            self.transport.resume_reading()

    # The socket we write to is full: stop reading from the one that feeds it.
    def pause_writing(self) -> None:
        self.relay.peer(self).pause()

    def resume_writing(self) -> None:
        self.relay.peer(self).resume()


class _Relay:
    """A connection relayed byte for byte (no faults): asyncio protocols and one timer per direction.

    The proxy's cheap path (a benchmark runs it beside the server, on the server's
    core): no task per connection or per read, no parsing, no copy but the delay line.
    Half-closes are passed on; a reset on one side aborts the other at once.
    """

    def __init__(self, server: RelayServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.client = _RelaySide(self)
        self.upstream = _RelaySide(self)
        half = server.rtt / 2
        self.client.out = _Direction(loop, half, self.client, self.upstream)
        self.upstream.out = _Direction(loop, half, self.upstream, self.client)
        self.client.out.not_before = loop.time() + server.rtt  # the handshake's round trip
        self.task: asyncio.Task[None] | None = None

    def peer(self, side: _RelaySide) -> _RelaySide:
        return self.upstream if side is self.client else self.client

    async def connect(self) -> None:
        try:
            await self.loop.create_connection(lambda: self.upstream, *self.server.upstream)
        except OSError:
            self.server.count("upstream_connect_errors")
            self.abort()
            return
        if self.client.transport is None or self.client.transport.is_closing():
            self.abort()  # the client went away meanwhile
            return
        self.client.out.arm()

    def lost(self, side: _RelaySide, exc: Exception | None) -> None:
        """A socket closed: after an error the other is aborted; a clean close was a FIN both ways.

        After a clean close, what the socket sent before it (its last bytes, then its
        FIN) may still be in the delay line: it goes on to the other socket, whose
        own close follows from that FIN.
        """
        other = self.peer(side)
        if exc is not None:
            side.out.cancel()
            if other.transport is not None and not other.transport.is_closing():
                other.out.cancel()
                other.transport.abort()
        if other.transport is None or other.transport.is_closing():
            self.server.live.discard(self)

    def abort(self) -> None:
        self.client.out.cancel()
        self.upstream.out.cancel()
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.abort()
        self.server.live.discard(self)
