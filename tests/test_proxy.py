"""The latency and fault-injecting proxy (testbed/proxy.py) itself, against the real SeaweedFS."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

from testbed.faults import Decider, Fault, operation
from testbed.framing import CHUNKED, UNTIL_CLOSE, Reader
from testbed.proxy import ThreadedProxy
from testbed.store import Store


def _client(store: Store, endpoint: str, **config: Any) -> Any:
    """No retries: a fault the proxy injects must reach the test."""
    return store.new_client(endpoint, retries={"total_max_attempts": 1}, **config)


@pytest.mark.parametrize("rtt", [0, 10])
@pytest.mark.parametrize("inspect", [False, True], ids=["relay", "parsing"])
def test_requests_pass_through_unchanged(seaweed: Store, pair: tuple[str, str], inspect: bool, rtt: int) -> None:
    src, dst = pair
    body = bytes(range(256)) * 1024  # 256 KiB: several reads on both sides
    with ThreadedProxy(seaweed.endpoint, inspect=inspect, rtt_ms=rtt) as p:
        c = _client(seaweed, p.endpoint_url)
        c.put_object(Bucket=src, Key="dir/a b+c", Body=body)
        assert c.get_object(Bucket=src, Key="dir/a b+c")["Body"].read() == body
        assert c.head_object(Bucket=src, Key="dir/a b+c")["ContentLength"] == len(body)
        c.copy_object(Bucket=dst, Key="copy", CopySource={"Bucket": src, "Key": "dir/a b+c"})
        c.delete_object(Bucket=src, Key="dir/a b+c")
        listed = c.list_object_versions(Bucket=src)
        assert len(listed["Versions"]) == 1 and len(listed["DeleteMarkers"]) == 1
        assert c.get_object(Bucket=dst, Key="copy")["Body"].read() == body
        stats = p.stats
    assert stats["connections"] >= 1 and not stats.get("proxy_errors")
    if inspect:
        assert stats["requests"] == 7
        for op in ("PutObject", "GetObject", "HeadObject", "CopyObject", "DeleteObject", "ListObjectVersions"):
            assert stats[f"requests:{op}"] == (2 if op == "GetObject" else 1), op


def test_round_trip_time_is_added_per_request_and_at_connect(seaweed: Store, pair: tuple[str, str]) -> None:
    src, _ = pair
    direct = _client(seaweed, seaweed.endpoint)
    direct.put_object(Bucket=src, Key="k", Body=b"x")
    with ThreadedProxy(seaweed.endpoint, rtt_ms=50) as p:
        c = _client(seaweed, p.endpoint_url)
        t = time.monotonic()
        c.head_object(Bucket=src, Key="k")
        first = time.monotonic() - t
        t = time.monotonic()
        c.head_object(Bucket=src, Key="k")
        second = time.monotonic() - t
    assert first >= 0.100  # the handshake's round trip, then the request's
    assert 0.050 <= second < 0.100


def test_delays_do_not_serialise_connections(seaweed: Store, pair: tuple[str, str]) -> None:
    src, _ = pair
    _client(seaweed, seaweed.endpoint).put_object(Bucket=src, Key="k", Body=b"x")
    with ThreadedProxy(seaweed.endpoint, rtt_ms=200) as p:
        c = _client(seaweed, p.endpoint_url, max_pool_connections=16)
        t = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda _: c.head_object(Bucket=src, Key="k"), range(16)))
        elapsed = time.monotonic() - t
    # 16 connections, each a connect RTT and a request RTT (0.4 s): together, not one after another.
    assert 0.4 <= elapsed < 1.2


@pytest.mark.parametrize("rtt", [0, 20])
def test_closed_connections_are_closed_on_both_sides(seaweed: Store, pair: tuple[str, str], rtt: int) -> None:
    """A client that hangs up, or a server that does, leaves no socket open in the proxy (a benchmark
    relays tens of thousands of connections; each leaked one held two file descriptors)."""
    src, _ = pair
    _client(seaweed, seaweed.endpoint).put_object(Bucket=src, Key="k", Body=b"x")
    with ThreadedProxy(seaweed.endpoint, rtt_ms=rtt) as p:
        host, port = p.endpoint_url.removeprefix("http://").split(":")
        for close_header in (False, True):  # the client hangs up; the server does (Connection: close)
            for _ in range(20):
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                conn.request("GET", "/", headers={"Connection": "close"} if close_header else {})
                r = conn.getresponse()
                r.read()
                conn.close()
        deadline = time.monotonic() + 5
        while p.proxy.open_relays and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not p.proxy.open_relays, f"{p.proxy.open_relays} of 40 relayed connections still open"


def test_slowdown_for_copyobject_only(seaweed: Store, pair: tuple[str, str]) -> None:
    src, dst = pair
    with ThreadedProxy(seaweed.endpoint, faults=[Fault("slowdown", 1.0, op="CopyObject")], seed=11) as p:
        c = _client(seaweed, p.endpoint_url)
        c.put_object(Bucket=src, Key="k", Body=b"x")  # not a CopyObject: passes
        with pytest.raises(ClientError) as e:
            c.copy_object(Bucket=dst, Key="k", CopySource={"Bucket": src, "Key": "k"})
        assert e.value.response["Error"]["Code"] == "SlowDown"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        c.head_object(Bucket=src, Key="k")  # the connection stays usable after an injected answer
        stats = p.stats
    assert stats["slowdown"] == stats["slowdown:CopyObject"] == 1
    assert "Contents" not in _client(seaweed, seaweed.endpoint).list_objects_v2(Bucket=dst)  # never forwarded


def test_every_kind_of_fault(seaweed: Store, pair: tuple[str, str]) -> None:
    src, dst = pair
    direct = _client(seaweed, seaweed.endpoint)
    direct.put_object(Bucket=src, Key="k", Body=b"payload")
    copy = {"Bucket": dst, "Key": "c", "CopySource": {"Bucket": src, "Key": "k"}}

    def fails_with(fault: Fault, **config: Any) -> BaseException:
        with ThreadedProxy(seaweed.endpoint, faults=[fault]) as p:
            c = _client(seaweed, p.endpoint_url, **config)
            with pytest.raises((ClientError, ConnectionClosedError, ReadTimeoutError)) as e:
                c.copy_object(**copy)
            assert p.stats[f"{fault.kind}:CopyObject"] == 1
            err: BaseException = e.value
            return err

    e = fails_with(Fault("internal_error", 1.0, op="CopyObject"))
    assert isinstance(e, ClientError) and e.response["Error"]["Code"] == "InternalError"
    e = fails_with(Fault("access_denied", 1.0, op="CopyObject"))
    assert isinstance(e, ClientError) and e.response["Error"]["Code"] == "AccessDenied"
    e = fails_with(Fault("error_200", 1.0))
    assert isinstance(e, ClientError) and e.response["Error"]["Code"] == "InternalError"
    with ThreadedProxy(seaweed.endpoint, faults=[Fault("error_200", 1.0)]) as p:  # what botocore turned into a 500
        conn = http.client.HTTPConnection(p.endpoint_url.removeprefix("http://"), timeout=5)
        conn.request("PUT", f"/{dst}/c", headers={"x-amz-copy-source": f"/{src}/k"})
        r = conn.getresponse()
        raw = r.read()
        conn.close()
    assert r.status == 200 and raw.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError<')
    assert isinstance(fails_with(Fault("reset", 1.0, op="CopyObject")), ConnectionClosedError)
    assert "Contents" not in direct.list_objects_v2(Bucket=dst)  # none of the above reached the server
    # The response is lost but the copy was made.
    assert isinstance(fails_with(Fault("reset_after", 1.0, op="CopyObject")), ConnectionClosedError)
    assert direct.get_object(Bucket=dst, Key="c")["Body"].read() == b"payload"
    e = fails_with(Fault("stall", 1.0, op="CopyObject", seconds=3), read_timeout=0.5)
    assert isinstance(e, ReadTimeoutError)


def test_stall_delays_the_response(seaweed: Store, pair: tuple[str, str]) -> None:
    src, _ = pair
    with ThreadedProxy(seaweed.endpoint, faults=[Fault("stall", 1.0, op="PutObject", seconds=0.3, limit=1)]) as p:
        c = _client(seaweed, p.endpoint_url)
        t = time.monotonic()
        c.put_object(Bucket=src, Key="k", Body=b"x")
        stalled = time.monotonic() - t
        t = time.monotonic()
        c.put_object(Bucket=src, Key="k", Body=b"y")  # limit=1: the second one is not held
        assert time.monotonic() - t < 0.3 <= stalled
        assert p.stats["stall"] == 1


def test_fault_decisions_are_deterministic_per_seed(seaweed: Store, pair: tuple[str, str]) -> None:
    src, _ = pair
    _client(seaweed, seaweed.endpoint).put_object(Bucket=src, Key="k", Body=b"x")

    def outcomes(seed: int) -> list[bool]:
        faults = [Fault("slowdown", 0.3, op="HeadObject")]
        with ThreadedProxy(seaweed.endpoint, faults=faults, seed=seed) as p:
            c = _client(seaweed, p.endpoint_url)
            out = []
            for _ in range(30):
                c.list_objects_v2(Bucket=src)  # other operations draw from their own sequence
                try:
                    c.head_object(Bucket=src, Key="k")
                    out.append(True)
                except ClientError as e:
                    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 503
                    out.append(False)
            assert p.stats.get("slowdown", 0) == out.count(False)
            return out

    first = outcomes(5)
    assert first == outcomes(5)
    assert first != outcomes(6)
    assert 0 < first.count(False) < 30
    predicted = Decider([Fault("slowdown", 0.3, op="HeadObject")], 5)
    assert first == [predicted.decide("HeadObject") is None for _ in range(30)]


def test_decider_rates_and_limits() -> None:
    d = Decider([Fault("slowdown", 0.05), Fault("internal_error", 0.01), Fault("error_200", 0.5)], seed=1)
    kinds = [f.kind if (f := d.decide("PutObject")) else "" for _ in range(20_000)]
    assert 800 < kinds.count("slowdown") < 1200 and 100 < kinds.count("internal_error") < 300
    assert "error_200" not in kinds  # only for operations that answer 200 before they finish
    copies = Decider([Fault("error_200", 1.0)], seed=1)
    assert copies.decide("CopyObject") == Fault("error_200", 1.0) and copies.decide("GetObject") is None
    limited = Decider([Fault("reset", 1.0, op="CopyObject", limit=2)], seed=1)
    assert [limited.decide("CopyObject") is not None for _ in range(4)] == [True, True, False, False]
    with pytest.raises(ValueError, match="add up to"):
        Decider([Fault("slowdown", 0.7), Fault("reset", 0.5, op="GetObject")], seed=0)
    with pytest.raises(ValueError, match="unknown operation"):
        Fault("slowdown", 0.1, op="CopyObjects")


@pytest.mark.parametrize(
    ("method", "target", "headers", "op"),
    [
        ("PUT", "/b/k", {"x-amz-copy-source": "/a/k"}, "CopyObject"),
        ("PUT", "/b/k?partNumber=2&uploadId=u", {"x-amz-copy-source": "/a/k"}, "UploadPartCopy"),
        ("PUT", "/b/k?partNumber=2&uploadId=u", {}, "UploadPart"),
        ("PUT", "/b/dir/k", {}, "PutObject"),
        ("PUT", "/b", {}, "CreateBucket"),
        ("PUT", "/b?versioning", {}, "PutBucketVersioning"),
        ("GET", "/b?versions&prefix=p%2F&key-marker=x", {}, "ListObjectVersions"),
        ("GET", "/b?list-type=2&prefix=", {}, "ListObjectsV2"),
        ("GET", "/b/k?versionId=v", {}, "GetObject"),
        ("GET", "/b/k?tagging", {}, "GetObjectTagging"),
        ("GET", "/b/k?attributes", {}, "GetObjectAttributes"),
        ("GET", "/b/k?retention", {}, "GetObjectRetention"),
        ("GET", "/b?object-lock", {}, "GetObjectLockConfiguration"),
        ("GET", "/b?tagging", {}, "GetBucketTagging"),
        ("GET", "/", {}, "ListBuckets"),
        ("HEAD", "/b/k?partNumber=1", {}, "HeadObject"),
        ("HEAD", "/b", {}, "HeadBucket"),
        ("DELETE", "/b/k", {}, "DeleteObject"),
        ("DELETE", "/b/k?uploadId=u", {}, "AbortMultipartUpload"),
        ("POST", "/b/k?uploads", {}, "CreateMultipartUpload"),
        ("POST", "/b/k?uploadId=u", {}, "CompleteMultipartUpload"),
        ("POST", "/b?delete", {}, "DeleteObjects"),
        ("PUT", "/k", {"host": "bucket.s3.us-east-1.amazonaws.com", "x-amz-copy-source": "/a/k"}, "CopyObject"),
        ("GET", "/?versions", {"host": "bucket.s3.us-east-1.amazonaws.com"}, "ListObjectVersions"),
        ("GET", "/b?versions", {"host": "127.0.0.1:8333"}, "ListObjectVersions"),
    ],
)
def test_operations_are_recognised(method: str, target: str, headers: dict[str, str], op: str) -> None:
    assert operation(method, target, headers) == op


class _Pieces:
    """A ByteStream that hands out fixed pieces, then ends."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self.pieces:
            raise anyio.EndOfStream
        return self.pieces.pop(0)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_bodies_are_framed_whatever_the_read_boundaries(size: int) -> None:
    chunked = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n"
    wire = b"POST /b/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    wire += b"PUT /b/k HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"
    wire += b"HTTP/1.1 200 OK\r\n\r\ntail until close"
    pieces = [wire[i : i + size] for i in range(0, len(wire), size)]

    async def read() -> list[bytes]:
        r = Reader(_Pieces(pieces))  # type: ignore[arg-type]
        out: list[bytes] = []

        async def sink(b: bytes) -> None:
            out.append(b)

        for framing in (CHUNKED, 4, UNTIL_CLOSE):
            head = await r.head()
            assert head is not None and head.endswith(b"\r\n\r\n")
            await r.body(framing, sink)
            out.append(b"|")
        return out

    got = b"".join(anyio.run(read))
    assert got == chunked + b"|body|tail until close|"


def test_command_line(seaweed: Store, pair: tuple[str, str], tmp_path: Path) -> None:
    src, dst = pair
    stats_file = tmp_path / "stats.json"
    cmd = [sys.executable, "-m", "testbed.proxy", "--upstream", seaweed.endpoint, "--rtt-ms", "10", "--seed", "3"]
    cmd += ["--access-denied", "CopyObject", "--slowdown", "1.0", "--only", "DeleteObject"]
    cmd += ["--stats-file", str(stats_file)]
    root = Path(__file__).resolve().parent.parent
    with subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().strip()
        c = _client(seaweed, endpoint)
        c.put_object(Bucket=src, Key="k", Body=b"x")
        with pytest.raises(ClientError, match="AccessDenied"):
            c.copy_object(Bucket=dst, Key="k", CopySource={"Bucket": src, "Key": "k"})
        with pytest.raises(ClientError, match="SlowDown"):
            c.delete_object(Bucket=src, Key="k")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    stats = json.loads(stats_file.read_text())
    assert stats["access_denied:CopyObject"] == 1 and stats["slowdown:DeleteObject"] == 1
    assert stats["requests"] == 3
