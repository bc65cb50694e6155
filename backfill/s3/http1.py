"""A small HTTP/1.1 client for the lean S3 path: keep-alive connections, no request bodies.

It does what the three hot S3 calls need and nothing else: send a request
without a body, read the response (Content-Length, chunked, or until close),
reuse the connection. One request per connection at a time; idle connections
are kept for reuse. Failures surface as ConnectFailed (nothing was sent),
ConnectionError or TimeoutError (the request may have reached the server), which
errors.classify treats as retryable, like botocore's transport errors.

Why not aiohttp: at thousands of requests per second its per-request cost is
the larger part of the client's CPU (benchmarks/RESULTS.md); an asyncio
Protocol costs a fraction of it.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import cast

from backfill.errors import ConnectFailed, UserError, certificate_problem

_MAX_HEAD = 64 * 1024
_CHUNKED = -1
_UNTIL_CLOSE = -2
_CRLF_NEXT = -1  # chunked: a chunk's data is read, its CRLF is next
SWEEP_INTERVAL = 1.0  # seconds between checks for silent servers


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ","
    body: bytes


class _Conn(asyncio.Protocol):
    """One connection; parses one response at a time as bytes arrive."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: asyncio.Future[Response] | None = None
        self.last = 0.0  # loop time of the request's start or of its last byte received
        self.idle_limit = 0.0  # seconds without a byte after which the request fails
        self.buf = bytearray()
        self._reset(head_only=False)

    def _reset(self, *, head_only: bool) -> None:
        self.head_only = head_only
        self.status = 0
        self.headers: dict[str, str] | None = None
        self.need = 0  # body bytes still expected, or _CHUNKED / _UNTIL_CLOSE
        self.chunk_left = 0  # chunked: data bytes left in the current chunk, or _CRLF_NEXT
        self.parts: list[bytes] = []
        self.keep_alive = True

    # asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        self.last = self.loop.time()
        self.buf += data
        try:
            self._parse()
        except ValueError as exc:
            self._fail(ConnectionError(f"malformed HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        self._lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    # ---------------------------------------------------------------------

    def begin(self, waiter: asyncio.Future[Response], *, head_only: bool) -> None:
        self.waiter = waiter
        self.last = self.loop.time()
        self._reset(head_only=head_only)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers is not None and self.need == _UNTIL_CLOSE:
            self.keep_alive = False
            self._done(b"".join(self.parts) + bytes(self.buf))
            return
        what = f": {exc}" if exc else ""
        self._fail(ConnectionResetError(f"connection closed before the response was complete{what}"))

    def _done(self, body: bytes) -> None:
        assert self.headers is not None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(Response(self.status, self.headers, body))

    def _parse(self) -> None:
        while self.headers is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    raise ValueError("response head too large")
                return
            head = self.buf[:end].decode("latin-1")
            del self.buf[: end + 4]
            lines = head.split("\r\n")
            version, _, rest = lines[0].partition(" ")
            status = int(rest[:3])
            if 100 <= status < 200:
                continue  # 100 Continue and friends: the real response follows
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    raise ValueError(f"bad header line {line!r}")
                name = name.strip().lower()
                value = value.strip()
                headers[name] = f"{headers[name]},{value}" if name in headers else value
            self.status, self.headers = status, headers
            conn = headers.get("connection", "").lower()
            self.keep_alive = version == "HTTP/1.1" and "close" not in conn
            if self.head_only or status in (204, 304):
                self.need = 0
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                self.need = _CHUNKED
            elif "content-length" in headers:
                self.need = int(headers["content-length"])
            else:
                self.need = _UNTIL_CLOSE
                self.keep_alive = False
        if self.need >= 0:
            if len(self.buf) >= self.need:
                body = bytes(self.buf[: self.need])
                del self.buf[: self.need]
                self._done(body)
            return
        if self.need == _CHUNKED:
            self._parse_chunks()

    def _parse_chunks(self) -> None:
        buf = self.buf
        while True:
            if self.chunk_left > 0:
                take = min(self.chunk_left, len(buf))
                if not take:
                    return
                self.parts.append(bytes(buf[:take]))
                del buf[:take]
                self.chunk_left -= take
                if self.chunk_left:
                    return
                self.chunk_left = _CRLF_NEXT
            if self.chunk_left == _CRLF_NEXT:
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
                del buf[:2]
                self.chunk_left = 0
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise ValueError("chunk size line too long")
                return
            size = int(bytes(buf[:end]).split(b";", 1)[0].strip(), 16)
            if size == 0:
                trailers_end = buf.find(b"\r\n\r\n", end)  # no trailers: the CRLF right after "0"
                if trailers_end < 0:
                    return
                del buf[: trailers_end + 4]
                self._done(b"".join(self.parts))
                return
            del buf[: end + 2]
            self.chunk_left = size


class Pool:
    """Keep-alive connections to one host:port (TLS when `ssl_context` is given)."""

    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_idle: int = 256,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl_context
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self._idle: list[_Conn] = []
        self._busy: set[_Conn] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            transport, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Conn(loop),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            raise ConnectFailed(f"connecting to {self.host}:{self.port} timed out") from None
        except ssl.SSLError as exc:  # before OSError (it is one): no retry can fix a certificate
            raise certificate_problem(f"https://{self.host}:{self.port}", str(exc)) from exc
        except OSError as exc:  # refused, DNS failures, unreachable networks
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        conn.transport = transport  # uvloop may call connection_made only after this returns
        return conn

    def _take(self) -> _Conn | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def _sweep(self) -> None:
        """Fail the requests that have waited too long for a byte (one timer per pool, not per request)."""
        self._sweeper = None
        if not self._busy:
            return
        now = asyncio.get_running_loop().time()
        for conn in list(self._busy):
            idle = now - conn.last
            if idle >= conn.idle_limit:
                conn._fail(TimeoutError(f"no response from {self.host}:{self.port} for {idle:.0f} s"))
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)

    async def request(self, data: bytes, *, head_only: bool = False, idle_timeout: float | None = None) -> Response:
        """Send one complete request (head and no body); return the whole response.

        `idle_timeout`: seconds the server may stay silent (default: the pool's read_timeout).
        """
        conn = self._take() or await self._connect()
        waiter: asyncio.Future[Response] = conn.loop.create_future()
        conn.begin(waiter, head_only=head_only)
        conn.idle_limit = idle_timeout if idle_timeout is not None else self.read_timeout
        assert conn.transport is not None
        conn.transport.write(data)
        self._busy.add(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(SWEEP_INTERVAL, self._sweep)
        try:
            response = await waiter
        except BaseException:
            conn.abort()  # cancelled or failed mid-response: the connection's state is unknown
            raise
        finally:
            conn.waiter = None
            self._busy.discard(conn)
        if conn.keep_alive and not conn.closed and not conn.buf and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()
        return response

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def ca_context(path: str, *, from_env: bool) -> ssl.SSLContext:
    """A context verifying with the CA bundle at `path`; one line (UserError) when it cannot be used."""
    name = f"AWS_CA_BUNDLE={path}" if from_env else f"the profile's ca_bundle ({path}; or AWS_CA_BUNDLE)"
    fix = "point it at the PEM file of the CA that signs the endpoint's certificate, or unset it"
    try:
        return ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise UserError(f"{name}: no such file: {fix}") from None
    except ssl.SSLError as exc:
        raise UserError(f"{name} holds no usable PEM certificate ({exc.reason or exc}): {fix}") from None
    except OSError as exc:
        raise UserError(f"{name} cannot be read as a certificate file ({exc.strerror or exc}): {fix}") from None
