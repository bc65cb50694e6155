"""HTTP/1.1 framing for the proxy: message heads, body lengths (Content-Length, chunked, until
close), and a buffered reader that passes bodies on piece by piece as they arrive."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anyio
from anyio.abc import ByteStream

MAX_HEAD = 64 * 1024
CHUNK = 65536


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


class Reader:
    """Buffered reads from a byte stream: heads, and bodies passed on piece by piece."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _fill(self) -> bool:
        try:
            self.buf += await self.stream.receive(CHUNK)
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
            if len(self.buf) > MAX_HEAD:
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
            if len(self.buf) > MAX_HEAD:
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
