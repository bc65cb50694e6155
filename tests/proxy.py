"""An HTTP/1.1-aware TCP proxy for the tests and the benchmarks: latency, and S3 faults on demand.

    async with Proxy("http://127.0.0.1:8333", rtt_ms=20, faults=[Fault("slowdown", 0.05)], seed=1) as p:
        ... p.endpoint_url ... p.stats ...

    with ThreadedProxy(upstream, faults=[Fault("access_denied", 1.0, op="CopyObject")]) as p:   # sync tests
        ...

    python -m tests.proxy --upstream http://127.0.0.1:PORT --rtt-ms 20 --slowdown 0.05 --only CopyObject

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
them, on asyncio protocols with one timer per direction (cheap: a benchmark runs it
on the server's core). With faults it runs on anyio streams, parses request and
response heads and frames bodies (Content-Length, chunked, or until close),
relaying body bytes as they come; answers keep the order of the requests.

Operations are recognised from the method, the path (path-style or virtual-host
addressing), the query and the x-amz-copy-source header; see `operation()`.
`stats` counts connections, requests per operation (when parsing) and every
injected fault, as "kind" and "kind:Operation".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

import anyio
from anyio import CancelScope
from anyio.abc import ByteStream, SocketAttribute, SocketStream
from anyio.from_thread import BlockingPortal, start_blocking_portal
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

KINDS = ("slowdown", "internal_error", "access_denied", "error_200", "reset", "reset_after", "stall")

# Operations the proxy can tell apart (for --only and Fault.op).
OPERATIONS = frozenset(
    {
        "AbortMultipartUpload",
        "CompleteMultipartUpload",
        "CopyObject",
        "CreateBucket",
        "CreateMultipartUpload",
        "DeleteBucket",
        "DeleteObject",
        "DeleteObjectTagging",
        "DeleteObjects",
        "GetBucketLocation",
        "GetObjectLegalHold",
        "GetObjectRetention",
        "GetObjectAcl",
        "GetBucketReplication",
        "GetBucketEncryption",
        "GetBucketAcl",
        "GetBucketTagging",
        "GetBucketPolicy",
        "GetObjectLockConfiguration",
        "GetBucketVersioning",
        "GetObject",
        "GetObjectAttributes",
        "GetObjectTagging",
        "HeadBucket",
        "HeadObject",
        "ListBuckets",
        "ListMultipartUploads",
        "ListObjectVersions",
        "ListObjects",
        "ListObjectsV2",
        "ListParts",
        "PutBucketVersioning",
        "PutObject",
        "PutObjectTagging",
        "UploadPart",
        "UploadPartCopy",
        "Other",
    }
)
# error_200 only exists for these: they answer 200 before they know the outcome.
ERROR_200_OPERATIONS = frozenset({"CopyObject", "UploadPartCopy", "CompleteMultipartUpload"})

_STATUS = {
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "internal_error": (
        500,
        "Internal Server Error",
        "InternalError",
        "We encountered an internal error. Please try again.",
    ),
    "access_denied": (403, "Forbidden", "AccessDenied", "Access Denied"),
    "error_200": (200, "OK", "InternalError", "We encountered an internal error. Please try again."),
}
_MAX_HEAD = 64 * 1024
_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class Fault:
    """Inject `kind` into a fraction `rate` of the requests of operation `op` (None: every operation).

    error_200 with op None applies to the operations that can answer that way.
    `limit` caps how many times this fault is injected; `seconds` is a stall's length.
    """

    kind: str
    rate: float
    op: str | None = None
    limit: int | None = None
    seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], not {self.rate}")
        if self.op is not None and self.op not in OPERATIONS:
            raise ValueError(f"unknown operation {self.op!r}; one of {', '.join(sorted(OPERATIONS))}")
        if self.kind == "error_200" and self.op is not None and self.op not in ERROR_200_OPERATIONS:
            raise ValueError(f"error_200 applies to {', '.join(sorted(ERROR_200_OPERATIONS))}, not {self.op}")

    def applies_to(self, op: str) -> bool:
        if self.op is not None:
            return self.op == op
        return self.kind != "error_200" or op in ERROR_200_OPERATIONS


class Decider:
    """Which fault (if any) the next request of an operation gets: a pure function of seed and arrival order."""

    def __init__(self, faults: Sequence[Fault], seed: int) -> None:
        self.faults = tuple(faults)
        self.seed = seed
        self._rules: dict[str, tuple[int, ...]] = {}
        for op in OPERATIONS:
            rules = tuple(i for i, f in enumerate(self.faults) if f.applies_to(op) and f.rate > 0)
            total = sum(self.faults[i].rate for i in rules)
            if total > 1.0 + 1e-9:
                raise ValueError(f"fault rates for {op} add up to {total:.3f} > 1")
            self._rules[op] = rules
        self._rngs: dict[str, random.Random] = {}
        self._used = [0] * len(self.faults)

    def decide(self, op: str) -> Fault | None:
        rules = self._rules.get(op, ())
        if not rules:
            return None
        rng = self._rngs.get(op)
        if rng is None:
            rng = self._rngs[op] = random.Random(f"{self.seed}/{op}")
        u = rng.random()  # one draw per request of this operation, whatever the outcome
        acc = 0.0
        for i in rules:
            f = self.faults[i]
            acc += f.rate
            if u < acc:
                if f.limit is not None and self._used[i] >= f.limit:
                    return None
                self._used[i] += 1
                return f
        return None


def _is_ip_or_local(host: str) -> bool:
    if host == "localhost" or ":" in host:
        return True
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return host.count(".") == 3


def operation(method: str, target: str, headers: Mapping[str, str]) -> str:
    """The S3 operation of a request, from its method, target and (lower-cased) headers."""
    path, _, query = target.partition("?")
    params = {p.split("=", 1)[0] for p in query.split("&") if p}
    segments = [s for s in path.split("/") if s]
    host = headers.get("host", "").rsplit(":", 1)[0] if not headers.get("host", "").startswith("[") else ""
    virtual = bool(host) and not _is_ip_or_local(host) and host.count(".") >= 2 and not host.startswith("s3.")
    has_bucket = virtual or len(segments) >= 1
    has_key = len(segments) >= (1 if virtual else 2)
    if not has_bucket:
        return "ListBuckets" if method == "GET" else "Other"
    if has_key:
        if method == "PUT":
            if "x-amz-copy-source" in headers:
                return "UploadPartCopy" if "partNumber" in params else "CopyObject"
            if "partNumber" in params:
                return "UploadPart"
            return "PutObjectTagging" if "tagging" in params else "PutObject"
        if method == "GET":
            for p, op in (
                ("uploadId", "ListParts"),
                ("tagging", "GetObjectTagging"),
                ("attributes", "GetObjectAttributes"),
                ("acl", "GetObjectAcl"),
                ("retention", "GetObjectRetention"),
                ("legal-hold", "GetObjectLegalHold"),
            ):
                if p in params:
                    return op
            return "GetObject"
        if method == "HEAD":
            return "HeadObject"
        if method == "DELETE":
            if "uploadId" in params:
                return "AbortMultipartUpload"
            return "DeleteObjectTagging" if "tagging" in params else "DeleteObject"
        if method == "POST":
            if "uploads" in params:
                return "CreateMultipartUpload"
            if "uploadId" in params:
                return "CompleteMultipartUpload"
        return "Other"
    if method == "GET":
        for p, op in (
            ("versions", "ListObjectVersions"),
            ("uploads", "ListMultipartUploads"),
            ("location", "GetBucketLocation"),
            ("versioning", "GetBucketVersioning"),
            ("object-lock", "GetObjectLockConfiguration"),
            ("policy", "GetBucketPolicy"),
            ("tagging", "GetBucketTagging"),
            ("acl", "GetBucketAcl"),
            ("encryption", "GetBucketEncryption"),
            ("replication", "GetBucketReplication"),
        ):
            if p in params:
                return op
        if query and any(p.startswith("list-type=2") for p in query.split("&")):
            return "ListObjectsV2"
        return (
            "ListObjects"
            if not params or params <= {"prefix", "marker", "delimiter", "max-keys", "encoding-type"}
            else "Other"
        )
    if method == "HEAD":
        return "HeadBucket"
    if method == "PUT":
        if not params:
            return "CreateBucket"
        return "PutBucketVersioning" if "versioning" in params else "Other"
    if method == "DELETE":
        return "DeleteBucket" if not params else "Other"
    if method == "POST" and "delete" in params:
        return "DeleteObjects"
    return "Other"


def s3_error(kind: str, resource: str, request_id: str, *, head_only: bool, close: bool) -> bytes:
    """A whole HTTP response carrying S3's XML error document for a fault kind."""
    status, reason, code, message = _STATUS[kind]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>{_xml_escape(resource)}</Resource>"
        f"<RequestId>{request_id}</RequestId><HostId>{request_id}</HostId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"x-amz-request-id: {request_id}\r\n"
        f"x-amz-id-2: {request_id}\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n"
        "Server: AmazonS3\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    ).encode()
    return head if head_only else head + body


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class ProtocolError(Exception):
    pass


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """(first line's first token, its second token, lower-cased headers) of a request or response head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2:
        raise ProtocolError(f"bad start line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


# Body framing: a byte count, CHUNKED, or UNTIL_CLOSE.
CHUNKED = -1
UNTIL_CLOSE = -2


def request_framing(headers: Mapping[str, str]) -> int:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return CHUNKED
    return int(headers.get("content-length", "0") or 0)


def response_framing(method: str, status: int, headers: Mapping[str, str]) -> int:
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return 0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return CHUNKED
    if "content-length" in headers:
        return int(headers["content-length"])
    return UNTIL_CLOSE


class _Reader:
    """Buffered reads from a byte stream: heads, and bodies passed on piece by piece."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _fill(self) -> bool:
        try:
            self.buf += await self.stream.receive(_CHUNK)
        except anyio.EndOfStream:
            return False
        return True

    async def head(self) -> bytes | None:
        """The next message head (through the blank line), or None at a clean end of stream."""
        start = 0
        while True:
            i = self.buf.find(b"\r\n\r\n", start)
            if i >= 0:
                head = bytes(self.buf[: i + 4])
                del self.buf[: i + 4]
                return head
            if len(self.buf) > _MAX_HEAD:
                raise ProtocolError("message head larger than 64 KiB")
            start = max(0, len(self.buf) - 3)
            if not await self._fill():
                if self.buf:
                    raise ProtocolError("end of stream inside a message head")
                return None

    async def _line(self) -> bytes:
        start = 0
        while True:
            i = self.buf.find(b"\r\n", start)
            if i >= 0:
                line = bytes(self.buf[: i + 2])
                del self.buf[: i + 2]
                return line
            if len(self.buf) > _MAX_HEAD:
                raise ProtocolError("chunk line larger than 64 KiB")
            start = max(0, len(self.buf) - 1)
            if not await self._fill():
                raise ProtocolError("end of stream inside a chunked body")

    async def _exact(self, n: int, sink: Callable[[bytes], Any] | None) -> None:
        while n > 0:
            if not self.buf and not await self._fill():
                raise ProtocolError("end of stream inside a body")
            piece = bytes(self.buf[:n])
            del self.buf[: len(piece)]
            n -= len(piece)
            if sink is not None:
                await sink(piece)

    async def body(self, framing: int, sink: Callable[[bytes], Any] | None) -> None:
        """Pass a body on to `sink` (or drop it, for None) as it arrives."""
        if framing >= 0:
            await self._exact(framing, sink)
        elif framing == UNTIL_CLOSE:
            while True:
                if self.buf:
                    piece = bytes(self.buf)
                    self.buf.clear()
                    if sink is not None:
                        await sink(piece)
                if not await self._fill():
                    return
        else:
            while True:
                line = await self._line()
                if sink is not None:
                    await sink(line)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size line {line!r}") from None
                if size == 0:
                    while True:  # trailers, up to the blank line
                        trailer = await self._line()
                        if sink is not None:
                            await sink(trailer)
                        if trailer == b"\r\n":
                            return
                await self._exact(size + 2, sink)


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

    def __init__(self, proxy: Proxy, loop: asyncio.AbstractEventLoop) -> None:
        self.proxy = proxy
        self.loop = loop
        self.client = _RelaySide(self)
        self.upstream = _RelaySide(self)
        half = proxy.rtt / 2
        self.client.out = _Direction(loop, half, self.client, self.upstream)
        self.upstream.out = _Direction(loop, half, self.upstream, self.client)
        self.client.out.not_before = loop.time() + proxy.rtt  # the handshake's round trip
        self.task: asyncio.Task[None] | None = None

    def peer(self, side: _RelaySide) -> _RelaySide:
        return self.upstream if side is self.client else self.client

    async def connect(self) -> None:
        try:
            await self.loop.create_connection(lambda: self.upstream, *self.proxy.upstream)
        except OSError:
            self.proxy._count("upstream_connect_errors")
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
            self.proxy._live.discard(self)

    def abort(self) -> None:
        self.client.out.cancel()
        self.upstream.out.cancel()
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.abort()
        self.proxy._live.discard(self)


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
        self._live: set[_Relay] = set()
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
        def accepted() -> _RelaySide:
            relay = _Relay(self, loop)
            self._live.add(relay)
            self._count("connections")
            relay.task = loop.create_task(relay.connect())
            return relay.client

        server = await loop.create_server(accepted, self.host, self.port)
        self.port = server.sockets[0].getsockname()[1]

        def stop() -> None:
            server.close()
            for relay in list(self._live):
                relay.abort()
            self._live.clear()

        self._stack.callback(stop)

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
                data = await src.receive(_CHUNK)
            except anyio.EndOfStream:
                await out.end()
                return
            await out.send(data)

    async def _requests_side(
        self, client: SocketStream, to_up: _Writer, pending: MemoryObjectSendStream[_Pending]
    ) -> None:
        reader = _Reader(client)
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
        reader = _Reader(upstream)
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
    ap = argparse.ArgumentParser(prog="python -m tests.proxy", description=__doc__.split("\n\n")[0] if __doc__ else "")
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
