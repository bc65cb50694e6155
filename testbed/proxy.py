"""An HTTP/1.1-aware TCP proxy for the tests and the benchmarks: latency, and S3 faults on demand.

    async with Proxy("http://127.0.0.1:8333", rtt_ms=20, faults=[Fault("slowdown", 0.05)], seed=1) as p:
        ... p.endpoint_url ... p.stats ...

    with ThreadedProxy(upstream, faults=[Fault("access_denied", 1.0, op="CopyObject")]) as p:   # sync tests
        ...

    python -m testbed.proxy --upstream http://127.0.0.1:PORT --rtt-ms 20 --slowdown 0.05 --only CopyObject

Latency (kernel netem is not available on the test bed): every byte is delivered
RTT/2 after it was read, in each direction, and a new connection's first request
waits one more RTT (the handshake a real client would have waited for). Bytes are
queued with their due time, so neither a connection nor the proxy is serialised by
the delay: throughput is not capped by it.

Faults are decided per request, in the order requests arrive, by one seeded
random.Random per operation: the k-th CopyObject's fate depends only on the seed,
the rates and k, never on timing. Kinds:

    slowdown        503 SlowDown (S3's XML error body); the request is not forwarded
    internal_error  500 InternalError; not forwarded
    access_denied   403 AccessDenied; not forwarded (rate 1.0 with an op: "that operation is denied")
    error_200       200 OK whose body is an <Error> (CopyObject, UploadPartCopy and
                    CompleteMultipartUpload do this on S3); not forwarded
    reset           the connection is reset (RST) instead of forwarding the request
    reset_after     the request is forwarded, and the connection is reset when the response
                    comes (the server did the work; the client does not learn it)
    stall           the request is forwarded and its response held for `seconds`

Without faults (and without `inspect=True`) the proxy relays bytes without parsing
them, on asyncio protocols with one timer per direction (testbed/relay.py; cheap:
a benchmark runs it on the server's core). With faults it runs on anyio streams,
parses request and response heads and frames bodies (testbed/framing.py:
Content-Length, chunked, or until close), relaying body bytes as they come;
answers keep the order of the requests. Which request gets which fault is
decided in testbed/faults.py.

Operations are recognised from the method, the path (path-style or virtual-host
addressing), the query and the x-amz-copy-source header; see `faults.operation()`.
`stats` counts connections, requests per operation (when parsing) and every
injected fault, as "kind" and "kind:Operation".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import signal
import socket
import struct
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import anyio
from anyio import CancelScope
from anyio.abc import ByteStream, SocketAttribute, SocketStream
from anyio.from_thread import BlockingPortal, start_blocking_portal
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from testbed.faults import ERROR_200_OPERATIONS, KINDS, Decider, Fault, operation, s3_error
from testbed.framing import CHUNK, UNTIL_CLOSE, ProtocolError, Reader, parse_head, request_framing, response_framing
from testbed.relay import RelayServer


class _Writer:
    """One direction's output: each piece is written `delay` seconds after it was handed over, in order."""

    _DATA, _CLOSE, _RESET = 0, 1, 2

    def __init__(self, stream: SocketStream, delay: float, scope: CancelScope) -> None:
        self.stream = stream
        self.delay = delay
        self.scope = scope
        send, recv = anyio.create_memory_object_stream[tuple[float, int, bytes]](1024)
        self._send: MemoryObjectSendStream[tuple[float, int, bytes]] = send
        self._recv: MemoryObjectReceiveStream[tuple[float, int, bytes]] = recv

    def close(self) -> None:
        self._send.close()
        self._recv.close()

    async def send(self, data: bytes) -> None:
        if self.delay <= 0:
            await self.stream.send(data)
        else:
            await self._send.send((anyio.current_time() + self.delay, self._DATA, data))

    async def end(self, *, reset: bool = False) -> None:
        """End the connection (both sides) once everything handed over so far is delivered."""
        if self.delay <= 0:
            await self._finish(reset)
        else:
            await self._send.send((anyio.current_time() + self.delay, self._RESET if reset else self._CLOSE, b""))

    async def _finish(self, reset: bool) -> None:
        if reset:
            raw: socket.socket = self.stream.extra(SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await self.stream.aclose()  # linger 0: the kernel answers with RST, not FIN
        else:
            with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self.stream.send_eof()
        self.scope.cancel()

    async def run(self) -> None:
        async with self._recv:
            async for due, what, data in self._recv:
                wait = due - anyio.current_time()
                if wait > 0:
                    await anyio.sleep(wait)
                if what != self._DATA:
                    await self._finish(what == self._RESET)
                    return
                await self.stream.send(data)


@dataclass(slots=True)
class _Forwarded:
    """A request sent upstream; its response is relayed (held for a stall, or replaced by a reset)."""

    method: str
    fault: Fault | None


@dataclass(slots=True)
class _Answer:
    """The proxy's own answer to a request it did not forward: bytes, or a reset (None)."""

    due: float
    data: bytes | None
    close: bool


_Pending = _Forwarded | _Answer
_CONNECTION_ERRORS = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, ProtocolError)


class Proxy:
    """The proxy as an async context manager; `endpoint_url` and `stats` while inside it."""

    def __init__(
        self,
        upstream: str,
        *,
        rtt_ms: float = 0.0,
        faults: Iterable[Fault] = (),
        seed: int = 0,
        inspect: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        u = urlsplit(upstream if "//" in upstream else f"http://{upstream}")
        if u.hostname is None or u.port is None:
            raise ValueError(f"upstream must be http://HOST:PORT, not {upstream!r}")
        self.upstream = (u.hostname, u.port)
        self.rtt = rtt_ms / 1000.0
        self.faults = tuple(faults)
        self.decider = Decider(self.faults, seed)
        self.parse = inspect or bool(self.faults)
        self.host = host
        self.port = port
        self._stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._requests = 0
        self._stack = contextlib.AsyncExitStack()
        self._relay_server: RelayServer | None = None
        self.last_error = ""

    # --- public ---------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot: connections, requests, requests:Op (when parsing), kind, kind:Op, proxy_errors."""
        with self._lock:
            return dict(self._stats)

    @property
    def open_relays(self) -> int:
        """Connections the byte relay (the no-fault path) holds open now."""
        return len(self._relay_server.live) if self._relay_server is not None else 0

    async def __aenter__(self) -> Proxy:
        if not self.parse:
            with contextlib.suppress(RuntimeError):  # only on the asyncio backend
                await self._start_relay(asyncio.get_running_loop())
                return self
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        await self._stack.enter_async_context(listener)
        self.port = listener.extra(SocketAttribute.local_port)
        tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.callback(tg.cancel_scope.cancel)
        tg.start_soon(listener.serve, self._connection)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    # --- internals ------------------------------------------------------------

    async def _start_relay(self, loop: asyncio.AbstractEventLoop) -> None:
        self._relay_server = RelayServer(loop, self.upstream, self.rtt, self._count)
        self.port = await self._relay_server.start(self.host, self.port)
        self._stack.callback(self._relay_server.close)

    def _count(self, *names: str) -> None:
        with self._lock:
            for n in names:
                self._stats[n] += 1

    async def _connection(self, client: SocketStream) -> None:
        self._count("connections")
        try:
            async with client:
                try:
                    upstream = await anyio.connect_tcp(*self.upstream)
                except OSError:
                    self._count("upstream_connect_errors")
                    return
                async with upstream:
                    await self._serve_connection(client, upstream)
        except Exception as exc:  # a bug in the proxy: count it, keep serving other connections
            self._count("proxy_errors")
            self.last_error = repr(exc)

    async def _serve_connection(self, client: SocketStream, upstream: SocketStream) -> None:
        half = self.rtt / 2
        send, recv = anyio.create_memory_object_stream[_Pending](64)
        with send, recv:
            async with anyio.create_task_group() as tg:
                scope = tg.cancel_scope
                to_up = _Writer(upstream, half, scope)
                to_client = _Writer(client, half, scope)
                try:
                    if half > 0:
                        tg.start_soon(self._guard, to_up.run, scope)
                        tg.start_soon(self._guard, to_client.run, scope)
                    if self.parse:
                        tg.start_soon(self._guard, lambda: self._requests_side(client, to_up, send), scope)
                        tg.start_soon(self._guard, lambda: self._responses_side(upstream, to_client, recv), scope)
                    else:
                        tg.start_soon(self._guard, lambda: self._relay(client, to_up, connect_delay=True), scope)
                        tg.start_soon(self._guard, lambda: self._relay(upstream, to_client), scope)
                    await anyio.sleep_forever()
                finally:
                    to_up.close()
                    to_client.close()

    async def _guard(self, fn: Callable[[], Any], scope: CancelScope) -> None:
        """Run one side of a connection; a peer that goes away ends the whole connection."""
        try:
            await fn()
        except _CONNECTION_ERRORS:
            scope.cancel()

    async def _relay(self, src: ByteStream, out: _Writer, *, connect_delay: bool = False) -> None:
        if connect_delay and self.rtt > 0:
            await anyio.sleep(self.rtt)
        while True:
            try:
                data = await src.receive(CHUNK)
            except anyio.EndOfStream:
                await out.end()
                return
            await out.send(data)

    async def _requests_side(
        self, client: SocketStream, to_up: _Writer, pending: MemoryObjectSendStream[_Pending]
    ) -> None:
        reader = Reader(client)
        if self.rtt > 0:
            await anyio.sleep(self.rtt)
        async with pending:
            while True:
                head = await reader.head()
                if head is None:
                    await to_up.end()
                    return
                method, target, headers = parse_head(head)
                op = operation(method, target, headers)
                with self._lock:
                    self._requests += 1
                    number = self._requests
                    fault = self.decider.decide(op)
                    self._stats["requests"] += 1
                    self._stats[f"requests:{op}"] += 1
                    if fault is not None:
                        self._stats[fault.kind] += 1
                        self._stats[f"{fault.kind}:{op}"] += 1
                framing = request_framing(headers)
                if fault is None or fault.kind in ("stall", "reset_after"):
                    await pending.send(_Forwarded(method, fault))
                    await to_up.send(head)
                    await reader.body(framing, to_up.send)
                    continue
                due = anyio.current_time() + self.rtt / 2  # when the far end would have had the request
                if fault.kind == "reset":
                    await pending.send(_Answer(due, None, close=True))
                    return
                # A client that waits for "100 Continue" gets the answer at once, and the connection ends
                # after it: whether its body follows is then unknowable.
                expect = headers.get("expect", "").lower() == "100-continue"
                if not expect:
                    await reader.body(framing, None)
                request_id = f"PROXY{number:012d}"
                data = s3_error(
                    fault.kind, target.partition("?")[0], request_id, head_only=method == "HEAD", close=expect
                )
                await pending.send(_Answer(due, data, close=expect))
                if expect:
                    return

    async def _responses_side(
        self, upstream: SocketStream, to_client: _Writer, pending: MemoryObjectReceiveStream[_Pending]
    ) -> None:
        reader = Reader(upstream)
        async with pending:
            async for item in pending:
                if isinstance(item, _Answer):
                    wait = item.due - anyio.current_time()
                    if wait > 0:
                        await anyio.sleep(wait)
                    if item.data is None:
                        await to_client.end(reset=True)
                        return
                    await to_client.send(item.data)
                    if item.close:
                        await to_client.end()
                        return
                    continue
                while True:  # interim (1xx) responses, then the final one
                    head = await reader.head()
                    if head is None:
                        await to_client.end()
                        return
                    _, status_text, headers = parse_head(head)
                    status = int(status_text)
                    final = status >= 200
                    if final and item.fault is not None:
                        if item.fault.kind == "reset_after":
                            await to_client.end(reset=True)
                            return
                        await anyio.sleep(item.fault.seconds)  # stall
                    await to_client.send(head)
                    framing = response_framing(item.method, status, headers)
                    await reader.body(framing, to_client.send)
                    if framing == UNTIL_CLOSE:
                        await to_client.end()
                        return
                    if final:
                        if headers.get("connection", "").lower() == "close":
                            await to_client.end()
                            return
                        break
        await to_client.end()


class ThreadedProxy:
    """The proxy on its own event loop in a thread, for synchronous tests: `with ThreadedProxy(...) as p:`."""

    def __init__(self, upstream: str, **kwargs: Any) -> None:
        self.proxy = Proxy(upstream, **kwargs)
        self._stack = contextlib.ExitStack()

    @property
    def endpoint_url(self) -> str:
        return self.proxy.endpoint_url

    @property
    def stats(self) -> dict[str, int]:
        return self.proxy.stats

    def __enter__(self) -> ThreadedProxy:
        portal: BlockingPortal = self._stack.enter_context(start_blocking_portal("asyncio"))
        self._stack.enter_context(portal.wrap_async_context_manager(self.proxy))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()


# --- command line ---------------------------------------------------------------


def _faults_from_args(args: argparse.Namespace) -> list[Fault]:
    faults: list[Fault] = []
    ops: list[str | None] = list(args.only) if args.only else [None]
    for kind in KINDS:
        rate = getattr(args, kind)
        if kind == "access_denied" or not rate:
            continue
        for op in ops:
            if kind == "error_200" and op is not None and op not in ERROR_200_OPERATIONS:
                continue
            faults.append(Fault(kind, rate, op, seconds=args.stall_seconds))
    faults.extend(Fault("access_denied", 1.0, op) for op in args.access_denied)
    return faults


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m testbed.proxy", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    ap.add_argument("--upstream", required=True, help="http://HOST:PORT of the S3 server")
    ap.add_argument("--port", type=int, default=0, help="port to listen on, 127.0.0.1 (default: any free one)")
    ap.add_argument("--rtt-ms", type=float, default=0.0, help="round-trip time to add")
    ap.add_argument("--seed", type=int, default=0)
    for kind in KINDS:
        if kind != "access_denied":
            ap.add_argument(f"--{kind.replace('_', '-')}", dest=kind, type=float, default=0.0, metavar="RATE")
    ap.add_argument("--stall-seconds", type=float, default=5.0)
    ap.add_argument(
        "--only", action="append", default=[], metavar="OP", help="faults only for this operation (repeatable)"
    )
    ap.add_argument("--access-denied", action="append", default=[], metavar="OP", help="deny every request of OP")
    ap.add_argument("--inspect", action="store_true", help="parse requests even without faults (counts operations)")
    ap.add_argument("--stats-file", help="write the stats as JSON here on exit")
    return ap


async def _serve(args: argparse.Namespace, faults: list[Fault]) -> Proxy:
    proxy = Proxy(
        args.upstream, rtt_ms=args.rtt_ms, faults=faults, seed=args.seed, inspect=args.inspect, port=args.port
    )
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with proxy:
            print(proxy.endpoint_url, flush=True)
            async for _ in signals:
                break
    return proxy


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        faults = _faults_from_args(args)
        Decider(faults, args.seed)
    except ValueError as exc:
        sys.exit(f"proxy: {exc}")
    options = {"use_uvloop": True} if importlib.util.find_spec("uvloop") is not None else {}
    proxy = anyio.run(_serve, args, faults, backend="asyncio", backend_options=options)
    stats = json.dumps(proxy.stats, sort_keys=True)
    if args.stats_file:
        Path(args.stats_file).write_text(stats + "\n")
    print(f"proxy stats: {stats}", file=sys.stderr)
    if proxy.last_error:
        print(f"proxy: last internal error: {proxy.last_error}", file=sys.stderr)


if __name__ == "__main__":
    main()
