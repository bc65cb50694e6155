"""A buffering HTTP/1.1 proxy for S3 emulations: read a whole request, let a hook change or answer it,
forward it, let a hook change the whole response, send it back.

    class MyProxy(S3Proxy):
        async def on_request(self, req: Message) -> Message | None: ...   # a response to refuse it
        async def on_response(self, req: Message, resp: Message) -> Message: ...

    with Threaded(MyProxy(upstream, access_key=..., secret_key=...)) as p:
        ... p.endpoint_url ...

Requests are path-style (the test bed's endpoints are 127.0.0.1). A request whose signed parts a hook
changed (`req.resign = True`) is signed again with the test bed's own credentials, by botocore's SigV4
signer (not backfill's), so the server still checks a valid signature. Bodies are held in memory: the
test bed's objects are copied server-side and stay small on the wire.

Unlike tests/proxy.py (latency and faults, byte-exact), this proxy rewrites what S3 says; the two can be
chained (client → fault proxy → this → server).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import urllib.parse
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, TypedDict, TypeVar

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


class Keys(TypedDict):
    """The test bed's credentials, which a proxy signs with (`**keys` into a proxy's constructor)."""

    access_key: str
    secret_key: str


@dataclass
class Message:
    """A request (`start` = method, target) or a response (`start` = status, reason)."""

    start: tuple[str, str]
    headers: list[tuple[str, str]]
    body: bytes = b""
    resign: bool = False
    close: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    def get(self, name: str, default: str | None = None) -> str | None:
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return default

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.headers.append((name, value))

    def remove(self, name: str) -> None:
        n = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != n]

    # --- requests ---
    @property
    def method(self) -> str:
        return self.start[0]

    @property
    def target(self) -> str:
        return self.start[1]

    @property
    def query(self) -> dict[str, str]:
        q = self.target.partition("?")[2]
        return {
            urllib.parse.unquote(k): urllib.parse.unquote(v)
            for k, _, v in (p.partition("=") for p in q.split("&") if p)
        }

    @property
    def bucket_key(self) -> tuple[str, str]:
        """(bucket, key) of a path-style request; key '' for a bucket request."""
        path = self.target.partition("?")[0]
        bucket, _, key = path.lstrip("/").partition("/")
        return urllib.parse.unquote(bucket), urllib.parse.unquote(key)

    # --- responses ---
    @property
    def status(self) -> int:
        return int(self.start[0])


def s3_error_response(status: int, reason: str, code: str, message: str, request_id: str = "TESTBED") -> Message:
    """An S3 XML error document as a response (the form every S3 error takes)."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{request_id}</RequestId><HostId>{request_id}</HostId></Error>"
    ).encode()
    return Message(
        (str(status), reason),
        [("Content-Type", "application/xml"), ("x-amz-request-id", request_id), ("Server", "AmazonS3")],
        body,
    )


class _Closed(Exception):
    pass


async def _read_head(r: asyncio.StreamReader) -> tuple[tuple[str, str], list[tuple[str, str]]]:
    try:
        raw = await r.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise _Closed from exc
    lines = raw.decode("latin-1").split("\r\n")
    a, b, c = [*lines[0].split(" ", 2), "", ""][:3]
    start = (a, b) if not a.startswith("HTTP/") else (b, c)
    headers = []
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
    return start, headers


async def _read_body(r: asyncio.StreamReader, m: Message, *, response_to: str | None = None) -> None:
    if response_to is not None and (response_to == "HEAD" or m.status in (204, 304) or m.status < 200):
        return
    te = (m.get("transfer-encoding") or "").lower()
    if "chunked" in te:
        out = bytearray()
        while True:
            size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await r.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            out += await r.readexactly(size)
            await r.readexactly(2)
        m.body = bytes(out)
        m.remove("transfer-encoding")
        return
    n = m.get("content-length")
    if n is not None:
        m.body = await r.readexactly(int(n))
    elif response_to is not None:
        m.body = await r.read()  # until the server closes
        m.close = True


def _serialise(m: Message, *, response: bool) -> bytes:
    m.remove("transfer-encoding")
    if response or m.body or m.get("content-length") is not None:
        m.set("Content-Length", str(len(m.body)))
    first = f"HTTP/1.1 {m.start[0]} {m.start[1]}" if response else f"{m.start[0]} {m.start[1]} HTTP/1.1"
    lines = [first, *(f"{k}: {v}" for k, v in m.headers), "", ""]
    return "\r\n".join(lines).encode("latin-1") + m.body


class S3Proxy:
    """The proxy; subclasses override the hooks. One upstream connection per client connection."""

    def __init__(self, upstream: str, *, access_key: str, secret_key: str) -> None:
        u = urllib.parse.urlsplit(upstream)
        self.upstream_host = u.hostname or "127.0.0.1"
        self.upstream_port = u.port or 80
        self.credentials = Credentials(access_key, secret_key)
        self.port = 0
        self.requests = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def on_request(self, req: Message) -> Message | None:
        return None

    async def on_response(self, req: Message, resp: Message) -> Message:
        return resp

    def sign(self, req: Message) -> None:
        """Sign `req` again (after a hook changed a header or the body), with the test bed's credentials."""
        auth = req.get("authorization") or ""
        scope = auth.partition("Credential=")[2].partition(",")[0].split("/")
        region = scope[2] if len(scope) > 3 else "us-east-1"
        for h in ("authorization", "x-amz-date", "x-amz-content-sha256", "content-length"):
            req.remove(h)
        host = req.get("host") or f"127.0.0.1:{self.port}"
        aws = AWSRequest(method=req.method, url=f"http://{host}{req.target}", data=req.body, headers=dict(req.headers))
        S3SigV4Auth(self.credentials, "s3", region).add_auth(aws)
        req.headers = list(aws.headers.items())
        if req.body:
            req.set("Content-Length", str(len(req.body)))

    async def exchange(self, req: Message) -> Message:
        """One request to the upstream server on a connection of its own (for a hook's own questions)."""
        r, w = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        try:
            req.set("Host", f"{self.upstream_host}:{self.upstream_port}")
            req.set("Connection", "close")
            self.sign(req)
            w.write(_serialise(req, response=False))
            await w.drain()
            start, headers = await _read_head(r)
            resp = Message(start, headers)
            await _read_body(r, resp, response_to=req.method)
            return resp
        finally:
            w.close()

    async def _client(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    start, headers = await _read_head(cr)
                except _Closed:
                    return
                req = Message(start, headers)
                if (req.get("expect") or "").lower() == "100-continue":
                    cw.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the body is read here, whole
                    await cw.drain()
                    req.remove("expect")
                await _read_body(cr, req)
                self.requests += 1
                answer = await self.on_request(req)
                if answer is None:
                    if req.resign:
                        self.sign(req)
                    if up is None:
                        up = await asyncio.open_connection(self.upstream_host, self.upstream_port)
                    up[1].write(_serialise(req, response=False))
                    await up[1].drain()
                    start, headers = await _read_head(up[0])
                    while start[0].startswith("1"):  # an interim answer (100 Continue): the real one follows
                        start, headers = await _read_head(up[0])
                    resp = Message(start, headers)
                    await _read_body(up[0], resp, response_to=req.method)
                    if resp.close or (resp.get("connection") or "").lower() == "close":
                        up[1].close()
                        up = None
                    answer = await self.on_response(req, resp)
                cw.write(_serialise(answer, response=True))
                await cw.drain()
                if (req.get("connection") or "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _Closed):
            return
        finally:
            if up is not None:
                up[1].close()
            with contextlib.suppress(Exception):
                cw.close()

    async def serve(self, started: threading.Event, stop: asyncio.Event) -> None:
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        async with server:
            await stop.wait()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


P = TypeVar("P", bound=S3Proxy)


class Threaded(Generic[P]):
    """Run an S3Proxy on its own event loop in a thread, for synchronous tests."""

    def __init__(self, proxy: P) -> None:
        self.proxy = proxy
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return self.proxy.endpoint_url

    def __enter__(self) -> Threaded[P]:
        started = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._stop = asyncio.Event()
            try:
                self._loop.run_until_complete(self.proxy.serve(started, self._stop))
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name=type(self.proxy).__name__)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
