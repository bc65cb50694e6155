"""S3 live replication, emulated in front of SeaweedFS: an HTTP proxy that is the CLI's endpoint.

Neither local server replicates (SeaweedFS has no replication; moto stores a rule and never runs
it, ../shared/design/TESTBED.md). This proxy stands for what S3 shows a client of a bucket that
replicates into a replica bucket, as documented by AWS:

- **Status values.** "The replication status of a source object will return either PENDING,
  COMPLETED, or FAILED. The replication status of a replica will return REPLICA", as the
  `x-amz-replication-status` header of GetObject and HeadObject
  (https://docs.aws.amazon.com/AmazonS3/latest/userguide/replication-status.html). Source versions
  written before the rule, or outside its prefix, answer no status: "Amazon S3 returns the
  x-amz-replication-status header if the object in your request is eligible for replication".
- **Only new writes.** "Live replication automatically replicates only new and updated objects
  that are written to the bucket after the replication configuration is created"; existing
  objects need S3 Batch Replication, which also replicates "objects that have failed replication"
  (https://docs.aws.amazon.com/AmazonS3/latest/userguide/s3-batch-replication-existing-config.html,
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/s3-batch-replication-batch.html). FAILED is
  final: "If object replication fails after you upload an object, you can't retry replication"
  (replication-status.html); `batch_replicate_failed()` stands for such a Batch Replication job.
- **Delete markers.** Replicated only when the rule says `DeleteMarkerReplication` Enabled: "If
  you have delete marker replication enabled, these markers are copied to the destination
  buckets" (https://docs.aws.amazon.com/AmazonS3/latest/userguide/delete-marker-replication.html).
  A DELETE of a specific version is never replicated. A delete marker has no replication status
  a client can read: HEAD/GET of a version that is a delete marker answers "405 Method Not Allowed
  error and the Last-Modified: timestamp response header"
  (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html, DeleteMarker). SeaweedFS
  answers 404 there; this proxy leaves that as it is (the product under test never HEADs a marker).
- **GetBucketReplication** (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketReplication.html)
  answers `ReplicationConfiguration` with `Role` and `Rule`s: `ID`, `Priority`, `Filter`/`Prefix`,
  `Status`, `DeleteMarkerReplication`/`Status`, `Destination`/`Bucket` (the replica's ARN,
  `arn:aws:s3:::NAME`) and `Account`; "If you include the Filter element in a replication
  configuration, you must also include the DeleteMarkerReplication and Priority elements. The
  response also returns those elements." A bucket without one answers 404
  `ReplicationConfigurationNotFoundError` (as SeaweedFS does too).
- **Listings.** ListObjectVersions carries no replication status (its `Version` has ETag,
  IsLatest, Key, LastModified, Owner, Size, StorageClass, VersionId:
  https://docs.aws.amazon.com/AmazonS3/latest/API/API_ObjectVersion.html; the status of many
  objects is read from S3 Inventory, replication-status.html): listings pass unchanged.
- **Version IDs.** On S3, replicas "retain all metadata, such as the original object creation
  times and version IDs" (https://docs.aws.amazon.com/AmazonS3/latest/userguide/replication.html).
  SeaweedFS cannot write a version under a given ID, so here **a replica's version ID differs
  from its source version's**, and its LastModified is the replication time. This is documented,
  not mapped: a product that recognised replicated versions by ID equality alone would fail here
  (it must also use the REPLICA status, as the issue asks; on AWS both hold).
- **Order and lag.** Each new source version is replicated `lag` seconds after its write (a
  number, or a function of key and version), one key's versions in the order they were written.
  `pause()` holds every replication until `resume()`; `drain()` waits until none is pending;
  `fail` (a function of key and version) makes a version's replication FAILED.

Writes are seen in the responses the proxy relays (2xx only) for the source bucket, once the rule
is on and the key is under the rule's prefix: PutObject, CopyObject into the source,
CompleteMultipartUpload, and a DELETE without versionId that created a delete marker. (DeleteObjects,
the multi-object POST, is not recognised: the tests do not use it.)

Requests are relayed byte for byte (so their SigV4 signatures stay valid); only response heads
gain `x-amz-replication-status`, and GetBucketReplication is answered here for every bucket.
The replicator writes into the replica with its own client, straight to SeaweedFS (not through
the proxy, so `stats` counts only the clients' requests). Bodies are buffered: for tests and
benchmarks with small objects. Path-style addressing only (what the CLI uses for 127.0.0.1).

    with Replicator(upstream, key, secret, source="src", replica="dst") as r:
        ... put objects (not replicated) ...
        r.rule_on(prefix="", delete_markers=True, lag=0.2)
        ... writes through r.endpoint_url are replicated; r.stats counts requests ...
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config

Lag = float | Callable[[str, str], float]
PENDING, COMPLETED, FAILED, REPLICA = "PENDING", "COMPLETED", "FAILED", "REPLICA"
_WRITES = frozenset({"PutObject", "CopyObject", "CompleteMultipartUpload", "DeleteObject"})
_Upstream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True)
class _Call:
    """One client request as the emulator relays it: its S3 operation, where it goes, and its bytes."""

    op: str
    bucket: str
    key: str
    query: dict[str, list[str]]
    method: str
    request: bytes


@dataclass(slots=True)
class Rule:
    prefix: str = ""
    delete_markers: bool = True
    priority: int = 1
    rule_id: str = "backfill-replication"
    account: str = "222222222222"
    role: str = "arn:aws:iam::111111111111:role/backfill-replication"


@dataclass(slots=True)
class Replicated:
    """One source version written after the rule went on, and what replication made of it."""

    key: str
    version_id: str
    delete_marker: bool
    written: float
    status: str = PENDING
    replica_version_id: str = ""
    replicated_at: float = 0.0


@dataclass(slots=True)
class _Task:
    due: float
    seq: int
    entry: Replicated = field(compare=False)

    def __lt__(self, other: _Task) -> bool:
        return (self.due, self.seq) < (other.due, other.seq)


def operation(method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
    """The S3 operation of a path-style request (enough for the tests' counts)."""
    parts = path.lstrip("/").split("/", 1)
    has_key = len(parts) == 2 and parts[1] != ""
    if not parts[0]:
        return "ListBuckets"
    if not has_key:
        if method == "GET":
            for sub, name in (
                ("replication", "GetBucketReplication"),
                ("versions", "ListObjectVersions"),
                ("versioning", "GetBucketVersioning"),
                ("location", "GetBucketLocation"),
                ("object-lock", "GetObjectLockConfiguration"),
                ("uploads", "ListMultipartUploads"),
                ("policy", "GetBucketPolicy"),
            ):
                if sub in query:
                    return name
            return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
        if method == "HEAD":
            return "HeadBucket"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        return f"Bucket{method.title()}"
    if method == "HEAD":
        return "HeadObject"
    if method == "GET":
        for sub, name in (("tagging", "GetObjectTagging"), ("acl", "GetObjectAcl"), ("uploadId", "ListParts")):
            if sub in query:
                return name
        if "retention" in query:
            return "GetObjectRetention"
        if "legal-hold" in query:
            return "GetObjectLegalHold"
        if "attributes" in query:
            return "GetObjectAttributes"
        return "GetObject"
    if method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            return "UploadPartCopy" if "x-amz-copy-source" in headers else "UploadPart"
        if "tagging" in query:
            return "PutObjectTagging"
        if query:
            return "PutObjectOther"
        return "CopyObject" if "x-amz-copy-source" in headers else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return "Other"


class Replicator:
    """The proxy and the replication it stands for; start with `with`, or start()/stop()."""

    def __init__(
        self,
        upstream: str,
        access_key: str,
        secret_key: str,
        *,
        source: str,
        replica: str,
        lag: Lag = 0.2,
        fail: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.source, self.replica = source, replica
        self.lag: Lag = lag
        self.fail = fail
        # Called (in a thread) with each request before it is forwarded: a test's moment to write meanwhile.
        self.before_forward: Callable[[_Call], None] | None = None
        self.rule: Rule | None = None
        self.rule_on_at: float | None = None
        self.stats: Counter[str] = Counter()
        self.versions: dict[str, Replicated] = {}  # source version ID → entry
        self.replica_ids: dict[str, str] = {}  # replica version ID → source version ID (the REPLICA versions)
        self._lock = threading.Condition()
        self._queue: list[_Task] = []
        self._seq = itertools.count()
        self._paused = False
        self._closing = False
        self._busy = False
        self._last_due: dict[str, float] = {}  # per key: versions replicate in write order
        self._client = boto3.client(
            "s3",
            endpoint_url=upstream,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._replicating: Counter[str] = Counter()  # replica keys being written by replication (any thread)
        self._writing: Counter[str] = Counter()  # source keys with a write under way (the proxy's loop only)
        self._written_cond = asyncio.Condition()
        self._threads: list[threading.Thread] = []
        self.port = 0

    # --- switches the test flips -------------------------------------------------------------

    def rule_on(self, *, prefix: str = "", delete_markers: bool = True, lag: Lag | None = None) -> None:
        """From now on, writes under `prefix` are replicated (GetBucketReplication shows the rule)."""
        with self._lock:
            self.rule = Rule(prefix=prefix, delete_markers=delete_markers)
            self.rule_on_at = time.time()
            if lag is not None:
                self.lag = lag

    def rule_off(self) -> None:
        with self._lock:
            self.rule = None

    def pause(self) -> None:
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._lock.notify_all()

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until every replication due so far is carried out (resumes a paused replicator)."""
        self.resume()
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._queue)} replications still pending after {timeout} s")
                self._lock.wait(min(left, 0.05))

    def batch_replicate_failed(self) -> int:
        """What an S3 Batch Replication job filtered on ReplicationStatus FAILED does: replicate them now."""
        with self._lock:
            failed = [e for e in self.versions.values() if e.status == FAILED]
        for e in failed:
            self._replicate(e, force=True)
        return len(failed)

    def status(self, version_id: str) -> str | None:
        with self._lock:
            e = self.versions.get(version_id)
            return e.status if e else None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- life cycle --------------------------------------------------------------------------

    def __enter__(self) -> Replicator:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        started = threading.Event()

        def serve() -> None:
            with contextlib.suppress(asyncio.CancelledError):  # a handler cancelled at shutdown: nothing lost
                asyncio.run(main())

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            async with server:
                await self._stopping.wait()
                server.close()
                me = asyncio.current_task()
                tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for w in self._open:  # every stream of the proxy's, closed while the loop still runs
                    w.close()
                    with contextlib.suppress(Exception):
                        await w.wait_closed()
                self._open.clear()

        t = threading.Thread(target=serve, name="replicator-proxy", daemon=True)
        t.start()
        started.wait(10)
        w = threading.Thread(target=self._worker, name="replicator", daemon=True)
        w.start()
        self._threads = [t, w]

    def stop(self) -> None:
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        for t in self._threads:
            t.join(10)
        self._client.close()

    # --- replication -------------------------------------------------------------------------

    def _written(self, key: str, version_id: str, delete_marker: bool) -> None:
        with self._lock:
            rule = self.rule
            if rule is None or not key.startswith(rule.prefix) or not version_id:
                return
            if delete_marker and not rule.delete_markers:
                return  # not replicated, and a delete marker has no status to show
            now = time.time()
            entry = Replicated(key, version_id, delete_marker, now)
            self.versions[version_id] = entry
            lag = self.lag(key, version_id) if callable(self.lag) else self.lag
            due = max(now + lag, self._last_due.get(key, 0.0))  # never before an older version of this key
            self._last_due[key] = due
            heapq.heappush(self._queue, _Task(due, next(self._seq), entry))
            self._lock.notify_all()

    def _worker(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._closing:
                        return
                    if self._queue and not self._paused:
                        wait = self._queue[0].due - time.time()
                        if wait <= 0:
                            task = heapq.heappop(self._queue)
                            self._busy = True
                            break
                        self._lock.wait(min(wait, 0.05))
                    else:
                        self._lock.wait(0.05)
            try:
                self._replicate(task.entry)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _replicate(self, e: Replicated, *, force: bool = False) -> None:
        if not force and self.fail is not None and self.fail(e.key, e.version_id):
            with self._lock:
                e.status = FAILED
            return
        with self._lock:
            self._replicating[e.key] += 1
        try:
            if e.delete_marker:
                r = self._client.delete_object(Bucket=self.replica, Key=e.key)
            else:
                r = self._client.copy_object(
                    Bucket=self.replica,
                    Key=e.key,
                    CopySource={"Bucket": self.source, "Key": e.key, "VersionId": e.version_id},
                )
        except Exception:  # a permanent failure is what S3 reports as FAILED
            with self._lock:
                e.status = FAILED
                self._replicating[e.key] -= 1
            return
        with self._lock:
            self._replicating[e.key] -= 1
            e.replica_version_id = r.get("VersionId", "")
            e.replicated_at = time.time()
            e.status = COMPLETED
            if e.replica_version_id:
                self.replica_ids[e.replica_version_id] = e.version_id

    # --- the proxy ---------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up: _Upstream | None = None
        self._open.add(writer)
        try:
            while True:
                head = await _read_head(reader)
                if head is None:
                    return
                method, target, headers = _parse_request(head)
                if headers.get("expect", "").lower() == "100-continue":
                    # Answer the interim response here and relay the request without it (SigV4 never signs
                    # Expect): the upstream then sends one final response, as for any other request.
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()
                    head = b"\r\n".join(x for x in head.split(b"\r\n") if not x.lower().startswith(b"expect:"))
                body = await _read_body(reader, head, request=True)
                split = urllib.parse.urlsplit(target)
                path = urllib.parse.unquote(split.path)
                query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
                op = operation(method, path, query, headers)
                bucket, _, key = path.lstrip("/").partition("/")
                self.stats[op] += 1
                side = "source" if bucket == self.source else "replica" if bucket == self.replica else bucket
                self.stats[f"{op}:{side}"] += 1
                if op == "GetBucketReplication":
                    writer.write(self._replication_answer(bucket))
                    await writer.drain()
                    continue
                # On S3 a new version answers PENDING from the moment its write completes. Here its status is
                # known once the write's answer has passed through: a HEAD/GET of that key waits for writes
                # to it that are under way, so that it never sees such a version without its status.
                writing = bucket == self.source and op in _WRITES
                if writing:
                    self._writing[key] += 1
                elif bucket == self.source and op in ("HeadObject", "GetObject"):
                    await self._until_written(key)
                elif bucket == self.replica and op in ("HeadObject", "GetObject"):
                    while self._replicating[key]:  # noqa: ASYNC110 - set by the replication thread; REPLICA from the start
                        await asyncio.sleep(0.005)
                call = _Call(op, bucket, key, query, method, head + body)
                if self.before_forward is not None:
                    await asyncio.to_thread(self.before_forward, call)
                try:
                    up = await self._forward(up, call, writer)
                finally:
                    if writing:
                        self._writing[key] -= 1
                        async with self._written_cond:
                            self._written_cond.notify_all()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return  # the proxy is stopping (3.11's start_server logs a handler that ends cancelled)
        finally:
            for w in (writer, up[1] if up is not None else None):
                if w is not None:
                    w.close()
                    with contextlib.suppress(Exception, asyncio.CancelledError):  # stopping: close, do not wait
                        await w.wait_closed()
                    self._open.discard(w)

    async def _until_written(self, key: str) -> None:
        async with self._written_cond:
            while self._writing[key]:
                await self._written_cond.wait()

    async def _forward(self, up: _Upstream | None, call: _Call, writer: asyncio.StreamWriter) -> _Upstream | None:
        """Relay one request upstream and its answer back; returns the upstream connection (None: closed)."""
        if up is None:
            up = await asyncio.open_connection(self.upstream.hostname, self.upstream.port)
            self._open.add(up[1])
        try:
            return await self._exchange(up, call, writer)
        except BaseException:
            up[1].close()
            raise

    async def _exchange(self, up: _Upstream, call: _Call, writer: asyncio.StreamWriter) -> _Upstream | None:
        up[1].write(call.request)
        await up[1].drain()
        rhead = await _read_head(up[0])
        if rhead is None:
            raise ConnectionError("the upstream closed the connection")
        status, rheaders = _parse_response(rhead)
        rbody = await _read_body(up[0], rhead, request=False, method=call.method, status=status)
        rhead = self._after(call, status, rheaders, rhead)
        writer.write(rhead + rbody)
        await writer.drain()
        if rheaders.get("connection", "").lower() == "close":
            up[1].close()
            return None
        return up

    def _after(self, call: _Call, status: int, headers: dict[str, str], head: bytes) -> bytes:
        """Note the source's new versions; add x-amz-replication-status to HEAD/GET answers."""
        if not 200 <= status < 300:
            return head
        op, bucket, key, query = call.op, call.bucket, call.key, call.query
        vid = headers.get("x-amz-version-id", "")
        if bucket == self.source:
            if op in ("PutObject", "CopyObject", "CompleteMultipartUpload"):
                self._written(key, vid, False)
            elif op == "DeleteObject" and "versionId" not in query and headers.get("x-amz-delete-marker") == "true":
                self._written(key, vid, True)
        if op not in ("HeadObject", "GetObject"):
            return head
        asked = query.get("versionId", [vid])[0] or vid
        value: str | None = None
        with self._lock:
            if bucket == self.source:
                e = self.versions.get(asked)
                value = e.status if e else None
            elif bucket == self.replica and asked in self.replica_ids:
                value = REPLICA
        if value is None:
            return head
        return head[:-2] + f"x-amz-replication-status: {value}\r\n\r\n".encode()

    def _replication_answer(self, bucket: str) -> bytes:
        with self._lock:
            rule = self.rule if bucket == self.source else None
        if rule is None:
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ReplicationConfigurationNotFoundError</Code>'
                "<Message>The replication configuration was not found</Message>"
                f"<BucketName>{bucket}</BucketName><RequestId>replicator</RequestId></Error>"
            ).encode()
            return _response(404, "Not Found", body)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Role>{rule.role}</Role>"
            f"<Rule><ID>{rule.rule_id}</ID><Priority>{rule.priority}</Priority>"
            f"<Filter><Prefix>{_xml(rule.prefix)}</Prefix></Filter><Status>Enabled</Status>"
            f"<DeleteMarkerReplication><Status>{'Enabled' if rule.delete_markers else 'Disabled'}</Status>"
            "</DeleteMarkerReplication>"
            f"<Destination><Bucket>arn:aws:s3:::{self.replica}</Bucket><Account>{rule.account}</Account>"
            "<AccessControlTranslation><Owner>Destination</Owner></AccessControlTranslation></Destination>"
            "</Rule></ReplicationConfiguration>"
        ).encode()
        return _response(200, "OK", body, content_type="application/xml")


def _xml(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _response(status: int, reason: str, body: bytes, content_type: str = "application/xml") -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "x-amz-request-id: replicator\r\n\r\n"
    ).encode() + body


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    except asyncio.LimitOverrunError:
        raise ConnectionError("request head too large") from None
    return head


def _headers(lines: list[bytes]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        out[name.strip().lower()] = value.strip()
    return out


def _parse_request(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.split(b"\r\n")
    method, target, _ = lines[0].decode("latin-1").split(" ", 2)
    return method, target, _headers([x for x in lines[1:] if x])


def _parse_response(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.split(b"\r\n")
    return int(lines[0].split(b" ", 2)[1]), _headers([x for x in lines[1:] if x])


async def _read_body(
    reader: asyncio.StreamReader, head: bytes, *, request: bool, method: str = "", status: int = 0
) -> bytes:
    """The raw bytes of a message body, framed as HTTP/1.1 frames it (chunked bodies kept chunked)."""
    headers = _parse_request(head)[2] if request else _parse_response(head)[1]
    if not request and (method == "HEAD" or status in (204, 304) or 100 <= status < 200):
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            line = await reader.readuntil(b"\r\n")
            out += line
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailers, up to the empty line
                    t = await reader.readuntil(b"\r\n")
                    out += t
                    if t == b"\r\n":
                        return bytes(out)
            out += await reader.readexactly(size + 2)
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if request:
        return b""
    with contextlib.suppress(asyncio.IncompleteReadError):
        return await reader.read()  # until close
    return b""


def replicator_for(store: Any, source: str, replica: str, **kwargs: Any) -> Replicator:
    """A Replicator in front of a test Store (tests/conftest.py) for one bucket pair."""
    env = store.env
    return Replicator(
        store.endpoint, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], source=source, replica=replica, **kwargs
    )
