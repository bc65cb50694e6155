"""A small HTTP/1.1 proxy that can answer for the server: emulations of what the local servers never say.

    with Gate(upstream, rule=expired_credentials({"night-0"})) as g:   # g.endpoint_url
        ...

Each request's head is parsed and offered to `rule(method, target, headers)`: a rule returns the
bytes of a whole response to send instead of forwarding, or None to forward the request as it
is. Forwarding uses one upstream connection per client connection (keep-alive both sides), so a
request the rule passes reaches the server exactly once. If the upstream connection fails (the
server was killed, it reset the connection, nothing listens), the client's connection is reset
too, without an answer: the client sees what it would see without the gate.

`tls` (a backfill.seaweed.Tls) makes the gate listen for HTTPS and speak plain HTTP upstream:
a TLS terminator in front of a plain-HTTP fault proxy, so that the fault tests run over TLS.

Rules here stand for AWS behaviours that neither SeaweedFS nor moto shows:

- `expired_credentials`: S3 answers a request signed with an expired session token with
  400 ExpiredToken ("The provided token has expired."), and an unknown one with 400
  InvalidToken ("The provided token is malformed or otherwise invalid."): the S3 API
  reference's list of error codes, https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html
  (other services answer ExpiredTokenException with 403: the "Common Errors" pages).
- `skewed_clock`: S3 refuses a request whose x-amz-date is more than 15 minutes from its own
  clock with 403 RequestTimeTooSkewed; the body carries RequestTime, ServerTime and
  MaxAllowedSkewMilliseconds 900000 (same reference; bodies as seen from S3 in
  aws/aws-cli#8662 and crytic/cloudexec#48: "The difference between the request time and the
  current time is too large.").
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import socketserver
import ssl
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from backfill.seaweed import Tls

Rule = Callable[[str, str, Mapping[str, str]], bytes | None]
_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"})


def s3_error_response(
    status: int,
    reason: str,
    code: str,
    message: str,
    extra: Mapping[str, str] | None = None,
    *,
    now: datetime | None = None,
) -> bytes:
    """S3's REST error response: an XML <Error> body with Code, Message, RequestId and the extra fields."""
    rid = uuid.uuid4().hex[:16].upper()
    fields = "".join(f"<{k}>{v}</{k}>" for k, v in (extra or {}).items())
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
        f"{fields}<RequestId>{rid}</RequestId><HostId>gate</HostId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
        f"x-amz-request-id: {rid}\r\nDate: {formatdate((now or datetime.now(UTC)).timestamp(), usegmt=True)}\r\n"
        "Server: AmazonS3\r\n\r\n"
    ).encode()
    return head + body


def access_key(headers: Mapping[str, str]) -> str:
    """The access key a SigV4 request was signed with (Authorization: … Credential=KEY/date/…)."""
    auth = headers.get("authorization", "")
    _, found, rest = auth.partition("Credential=")
    return rest.partition("/")[0] if found else ""


def expired_credentials(
    revoked: Collection[str], *, issued: Callable[[], Mapping[str, float]] | None = None, lifetime: float = 0
) -> Rule:
    """ExpiredToken for requests signed with a key in `revoked` (a set the test may change while the
    gate runs), and, given `issued` (key → time.time() of issue) and `lifetime`, for keys issued more
    than `lifetime` seconds ago (testbed.credentials hands such keys out)."""

    def rule(method: str, target: str, headers: Mapping[str, str]) -> bytes | None:
        key = access_key(headers)
        stale = False
        if issued is not None and lifetime:
            when = issued().get(key)
            stale = when is not None and time.time() - when > lifetime
        if key in revoked or stale:
            return s3_error_response(400, "Bad Request", "ExpiredToken", "The provided token has expired.")
        return None

    return rule


def skewed_clock(offset: timedelta, *, max_skew: timedelta = timedelta(minutes=15)) -> Rule:
    """The server's clock is `offset` ahead of ours: requests dated further than 15 minutes from it are refused."""

    def rule(method: str, target: str, headers: Mapping[str, str]) -> bytes | None:
        stamp = headers.get("x-amz-date", "")
        server_now = datetime.now(UTC) + offset
        try:
            sent = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return None
        if abs(server_now - sent) <= max_skew:
            return None
        return s3_error_response(
            403,
            "Forbidden",
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            {
                "RequestTime": sent.strftime("%a, %d %b %Y %H:%M:%S GMT"),
                "ServerTime": server_now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "MaxAllowedSkewMilliseconds": str(int(max_skew.total_seconds() * 1000)),
            },
            now=server_now,  # the Date header shows the server's clock too
        )

    return rule


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a dropped connection looks to the client."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        gate = self.server.gate
        sock: socket.socket = self.request
        if gate.tls_context is not None:
            try:
                sock = gate.tls_context.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError):
                return  # the client refused our certificate: nothing to relay
        reader = sock.makefile("rb")
        upstream: http.client.HTTPConnection | None = None
        try:
            while True:
                line = reader.readline(65537)
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    continue
                method, target, _version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                headers: dict[str, str] = {}
                raw: list[tuple[str, str]] = []
                while True:
                    h = reader.readline(65537)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                    raw.append((name.strip(), value.strip()))
                if headers.get("expect", "").lower() == "100-continue":
                    # botocore asks before a PutObject body (aiohttp then waits for this answer); the
                    # body is read here and sent upstream whole, so upstream is not asked again.
                    sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    raw = [(n, v) for n, v in raw if n.lower() != "expect"]
                body = reader.read(int(headers.get("content-length", "0") or 0))
                gate.count("requests")
                answer = gate.rule(method, target, headers) if gate.rule is not None else None
                if answer is not None:
                    gate.count("answered")
                    if method == "HEAD":  # the head only: a HEAD answer has no body (S3's carries no error code)
                        answer = answer[: answer.index(b"\r\n\r\n") + 4]
                    sock.sendall(answer)
                    continue
                if upstream is None:
                    upstream = http.client.HTTPConnection(gate.upstream_host, gate.upstream_port, timeout=gate.timeout)
                try:
                    upstream.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                    for name, value in raw:
                        if name.lower() not in _HOP:
                            upstream.putheader(name, value)
                    upstream.endheaders(body or None)
                    r = upstream.getresponse()
                    data = r.read()
                except (OSError, http.client.HTTPException):
                    gate.count("upstream_failed")
                    _reset(sock)
                    return
                out = [f"HTTP/1.1 {r.status} {r.reason}"]
                for name, value in r.getheaders():
                    if name.lower() not in _HOP and name.lower() != "content-length":
                        out.append(f"{name}: {value}")
                if method != "HEAD":
                    out.append(f"Content-Length: {len(data)}")
                elif r.getheader("content-length") is not None:
                    out.append(f"Content-Length: {r.getheader('content-length')}")
                sock.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + (b"" if method == "HEAD" else data))
                if r.will_close:
                    upstream.close()
                    upstream = None
        except (OSError, ValueError):
            return
        finally:
            if upstream is not None:
                upstream.close()
            with contextlib.suppress(OSError):
                sock.close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512
    gate: Gate


class _Served:
    """A socketserver on a thread of its own, with request counts: what Gate and ConnectProxy share."""

    def __init__(self, server: socketserver.TCPServer) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class Gate(_Served):
    def __init__(
        self, upstream: str, *, rule: Rule | None = None, tls: Tls | None = None, timeout: float = 600
    ) -> None:
        u = urlsplit(upstream)
        assert u.scheme == "http" and u.hostname, "the gate speaks plain HTTP upstream"
        self.upstream_host = u.hostname
        self.upstream_port = u.port or 80
        self.rule = rule
        self.timeout = timeout
        self.tls_context: ssl.SSLContext | None = None
        if tls is not None:
            self.tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls_context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        server = _Server(("127.0.0.1", 0), _Handler)
        server.gate = self
        super().__init__(server)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint_url(self) -> str:
        if self.tls_context is not None:
            return f"https://localhost:{self.port}"
        return f"http://127.0.0.1:{self.port}"


class _TunnelHandler(socketserver.BaseRequestHandler):
    server: _TunnelServer

    def handle(self) -> None:
        client: socket.socket = self.request
        head = b""
        while not head.endswith(b"\r\n\r\n") and len(head) < 65536:  # byte by byte: nothing past the head is read
            byte = client.recv(1)
            if not byte:
                return
            head += byte
        line = head.decode("latin-1").partition("\r\n")[0]
        method, _, rest = line.partition(" ")
        target = rest.partition(" ")[0]
        proxy = self.server.proxy
        if method != "CONNECT":
            proxy.count("refused")
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        host, _, port = target.rpartition(":")
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except OSError:
            proxy.count("upstream_failed")
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        proxy.count("tunnels")
        proxy.targets.add(target)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        upstream.settimeout(None)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        other = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        other.start()
        pump(client, upstream)
        other.join(timeout=60)
        upstream.close()


class _TunnelServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: ConnectProxy


class ConnectProxy(_Served):
    """An HTTP proxy that only tunnels (CONNECT host:port), as HTTPS_PROXY points clients at one;
    `stats` counts the tunnels, `targets` holds the host:port each one went to."""

    def __init__(self) -> None:
        server = _TunnelServer(("127.0.0.1", 0), _TunnelHandler)
        server.proxy = self
        super().__init__(server)
        self.targets: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"
