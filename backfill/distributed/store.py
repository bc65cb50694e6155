"""The state location of a multi-shard job: a local directory or s3://BUCKET/PREFIX/.

    job.json                    the job: identity, copy options, creation time, the shard list
    shards/00007.lease          shard 7's lease and commit record (JSON, written conditionally)
    shards/00007.g000003.db     shard 7's checkpoint written by generation 3 (the manifest's
                                schema, holding only that shard's rows)

Every write that decides anything is conditional: If-None-Match: * to create, If-Match on
the ETag read before to replace, so a writer that lost the race gets `Conflict` instead of
overwriting a newer state. A local directory gets the same semantics from an fcntl lock
and an atomic rename; its ETag is the content's MD5, as S3's is for a single-part PUT.
Checkpoint files are written unconditionally but only by the generation that owns their
name; the lease names the one that counts. Nothing here holds credentials; local files
are created 0600.

An s3:// location is reached with a client of backfill.s3's factory; its requests are
retried by pacing.Pacer, as every S3 request of a run is (see S3Store). While a shard runs,
an unreachable state location pauses its requests as an unreachable endpoint pauses the copy
(pacing.EndpointHealth; `watch_reachability`), and the lease (distributed.lease) decides
whether copying may go on meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from botocore.exceptions import ClientError

from backfill.errors import BackfillError, UserError, classify, error_code, http_status
from backfill.pacing import EndpointHealth, Pacer, RateLimiter
from backfill.s3 import new_session, open_client, who

if TYPE_CHECKING:
    from backfill.pipeline.sides import Sides

JOB = "job.json"


class Conflict(Exception):
    """A conditional write lost: the object is not (or no longer) what the writer read."""


def lease_name(shard: int) -> str:
    return f"shards/{shard:05d}.lease"


def checkpoint_name(shard: int, generation: int) -> str:
    return f"shards/{shard:05d}.g{generation:06d}.db"


class Store(Protocol):
    url: str

    async def get(self, name: str) -> tuple[bytes, str] | None:
        """(body, etag), or None when there is no such object."""
        ...

    async def put(self, name: str, body: bytes, *, if_match: str | None = None, create: bool = False) -> str:
        """Write; `create`: only if absent; `if_match`: only if its ETag is still this. Returns the new ETag."""
        ...

    async def upload(self, name: str, path: Path) -> None: ...

    async def download(self, name: str, path: Path) -> bool: ...

    async def names(self, prefix: str) -> list[str]: ...

    async def delete(self, name: str) -> None: ...


def _etag(body: bytes) -> str:
    return '"' + hashlib.md5(body, usedforsecurity=False).hexdigest() + '"'


def _write_0600(path: Path, body: bytes) -> None:
    """Write a file atomically (temporary file, fsync, rename, fsync of the directory)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _save_0600(path: Path, body: bytes) -> None:
    """A downloaded copy, created (or truncated) 0600."""
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(body)


class LocalStore:
    """A directory on this machine (or one that every worker mounts)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def _path(self, name: str) -> Path:
        return self.root / name

    def _mkdirs(self, p: Path) -> None:
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    @contextlib.contextmanager
    def _locked(self, p: Path) -> Any:
        """One lock for the directory: conditional writes are small and rare (a lease write per page)."""
        self._mkdirs(p)
        fd = os.open(self.root / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _get(self, name: str) -> tuple[bytes, str] | None:
        try:
            body = self._path(name).read_bytes()
        except FileNotFoundError:
            return None
        return body, _etag(body)

    def _put(self, name: str, body: bytes, if_match: str | None, create: bool) -> str:
        p = self._path(name)
        with self._locked(p):
            current = self._get(name)
            if create and current is not None:
                raise Conflict(name)
            if if_match is not None and (current is None or current[1] != if_match):
                raise Conflict(name)
            _write_0600(p, body)
        return _etag(body)

    def _upload(self, name: str, path: Path) -> None:
        p = self._path(name)
        self._mkdirs(p)
        _write_0600(p, path.read_bytes())

    def _download(self, name: str, path: Path) -> bool:
        got = self._get(name)
        if got is not None:
            _save_0600(path, got[0])
        return got is not None

    def _names(self, prefix: str) -> list[str]:
        """Names that start with `prefix` (as an S3 listing of that prefix would give, one level deep)."""
        directory, _, start = prefix.rpartition("/")
        base = self.root / directory if directory else self.root
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in base.iterdir()
            if p.is_file() and p.name.startswith(start) and not p.name.startswith(".")
        )

    def _delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(name).unlink()

    async def get(self, name: str) -> tuple[bytes, str] | None:
        return await anyio.to_thread.run_sync(self._get, name)

    async def put(self, name: str, body: bytes, *, if_match: str | None = None, create: bool = False) -> str:
        return await anyio.to_thread.run_sync(self._put, name, body, if_match, create)

    async def upload(self, name: str, path: Path) -> None:
        await anyio.to_thread.run_sync(self._upload, name, path)

    async def download(self, name: str, path: Path) -> bool:
        return await anyio.to_thread.run_sync(self._download, name, path)

    async def names(self, prefix: str) -> list[str]:
        return await anyio.to_thread.run_sync(self._names, prefix)

    async def delete(self, name: str) -> None:
        await anyio.to_thread.run_sync(self._delete, name)


class S3Store:
    """s3://BUCKET/PREFIX/ with S3's conditional writes (If-Match / If-None-Match).

    The client comes from backfill.s3's factory and every request goes through
    `pacer`, as a bucket's requests do: nothing is sent twice underneath. A write
    whose answer was lost (a connection dropped after the request went out, a
    5xx) is looked for before it is sent again, and a conditional write refused
    (412, 409) is looked at too, since what refused it may be our own earlier
    attempt: if the object holds exactly our bytes, the write landed, and its
    ETag is the answer. A lease body names its owner and a heartbeat, so no one
    else writes the same bytes.
    """

    def __init__(self, client: Any, bucket: str, prefix: str, pacer: Pacer | None = None, who: str = "") -> None:
        self.client = client
        self.who = who  # whose credentials reach it ("profile NAME"), for a refusal's message
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}"
        self.pacer = pacer or Pacer(None, RateLimiter(None))

    @property
    def endpoint(self) -> str:
        """The URL its client sends requests to (botocore's resolved endpoint)."""
        return str(self.client.meta.endpoint_url)

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _what(self, what: str) -> str:
        return f"{what} in the state location {self.url}"

    def _refusal(self, exc: Exception, what: str) -> Exception:
        """What an error answer means here; one this does not decide goes to the pacer as it is."""
        code, status = error_code(exc), http_status(exc)
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            return Conflict(what)
        if code in ("NotImplemented", "InvalidArgument") or status == 501:
            return UserError(
                f"the state location {self.url} does not support conditional writes ({code}): "
                "use an S3 store that does (AWS S3 does), or a local --state directory"
            )
        return exc

    async def get(self, name: str) -> tuple[bytes, str] | None:
        key = self._key(name)

        async def read() -> tuple[bytes, str] | None:
            try:
                r = await self.client.get_object(Bucket=self.bucket, Key=key)
                async with r["Body"] as body:
                    data: bytes = await body.read()
            except ClientError as exc:
                if error_code(exc) in ("NoSuchKey", "404"):
                    return None
                raise self._refusal(exc, f"read {name}") from None
            return data, str(r["ETag"])

        return await self.pacer.run(self._what(f"read {name}"), read, bucket=self.bucket, who=self.who)

    async def put(self, name: str, body: bytes, *, if_match: str | None = None, create: bool = False) -> str:
        params: dict[str, Any] = {}
        if create:
            params["IfNoneMatch"] = "*"
        if if_match is not None:
            params["IfMatch"] = if_match
        key = self._key(name)

        async def write() -> str:
            try:
                r = await self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **params)
            except ClientError as exc:
                if if_match is not None and error_code(exc) in ("NoSuchKey", "404"):
                    raise Conflict(name) from None  # it was there when read: someone removed it
                raise self._refusal(exc, f"write {name}") from None
            return str(r["ETag"])

        async def landed() -> str | None:
            """The ETag of our write, if the store holds exactly its bytes."""
            got = await self.get(name)
            return got[1] if got is not None and got[0] == body else None

        try:
            return await self.pacer.run(
                self._what(f"write {name}"), write, bucket=self.bucket, who=self.who, landed=landed
            )
        except Conflict:
            etag = await landed()  # refused by our own earlier attempt, whose answer was lost?
            if etag is None:
                raise
            return etag

    async def upload(self, name: str, path: Path) -> None:
        body = await anyio.Path(path).read_bytes()
        key = self._key(name)

        async def write() -> None:  # unconditional, to a name only its generation writes: a resend is harmless
            try:
                await self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
            except ClientError as exc:
                raise self._refusal(exc, f"write {name}") from None

        await self.pacer.run(self._what(f"write {name}"), write, bucket=self.bucket, who=self.who)

    async def download(self, name: str, path: Path) -> bool:
        got = await self.get(name)
        if got is not None:
            _save_0600(path, got[0])
        return got is not None

    async def names(self, prefix: str) -> list[str]:
        out: list[str] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._key(prefix)}
            if token:
                params["ContinuationToken"] = token

            async def page(params: dict[str, Any] = params) -> Any:
                try:
                    return await self.client.list_objects_v2(**params)
                except ClientError as exc:
                    raise self._refusal(exc, f"list {prefix}") from None

            r = await self.pacer.run(self._what(f"list {prefix}"), page, bucket=self.bucket, who=self.who)
            out.extend(o["Key"][len(self.prefix) :] for o in r.get("Contents", []))
            if not r.get("IsTruncated"):
                return sorted(out)
            token = r.get("NextContinuationToken")

    async def delete(self, name: str) -> None:
        """Delete if there. An error answer, once the pacer gives up on it, is ignored."""
        key = self._key(name)
        try:
            await self.pacer.run(
                self._what(f"delete {name}"),
                lambda: self.client.delete_object(Bucket=self.bucket, Key=key),
                bucket=self.bucket,
                who=self.who,
            )
        except BackfillError as exc:
            if not isinstance(exc.__cause__, ClientError):
                raise


def watch_reachability(store: Store, sides: Sides, timeout: float) -> None:
    """From now on, when the s3:// state location stops answering, its requests wait (pacing.EndpointHealth).

    Its health is the copy's (`sides.health`) when it is reached at the source's or the replica's
    endpoint (the same server, the usual case: the replica's endpoint and profile reach it): one
    outage, one line, one probe, one --outage-timeout. At another endpoint it has its own, since a
    success of the copy's would end an outage of the state location's (and restart its timeout)
    while it is still down.
    """
    if not isinstance(store, S3Store):
        return
    shared = sides.health
    # A side's botocore client may not be open yet (the lean path opens it on first use): then the
    # endpoint it was given says where it goes.
    reached = {str(b.client.meta.endpoint_url) if b.client is not None else b.endpoint for b in (sides.src, sides.dst)}
    if shared is not None and store.endpoint in reached:
        store.pacer.health = shared
    else:
        notify = shared.notify if shared is not None else None
        store.pacer.health = EndpointHealth(timeout, notify=notify, name=f"state location {store.url}")


@dataclass(frozen=True, slots=True)
class StateAccess:
    """How to reach an s3:// state location (a local one needs nothing)."""

    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None


def is_s3(location: str) -> bool:
    return location.startswith("s3://")


def _local(location: str) -> LocalStore:
    root = Path(location)
    if root.exists() and not root.is_dir():
        raise UserError(f"--state {location} is a file: name a directory (or s3://BUCKET/PREFIX/)")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return LocalStore(root)


@contextlib.asynccontextmanager
async def open_store(location: str, access: StateAccess | None = None) -> AsyncIterator[Store]:
    if not is_s3(location):
        yield _local(location)
        return
    a = access or StateAccess()
    rest = location[5:]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise UserError(f"--state {location}: name a bucket, as s3://BUCKET/PREFIX/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    session = new_session(a.profile)
    try:
        async with open_client(session, region=a.region, endpoint_url=a.endpoint_url) as client:
            yield S3Store(client, bucket, prefix, who=who(a.profile))
    except ClientError as exc:
        raise classify(exc, what=f"the state location {location}", bucket=bucket) from None


async def check_conditional_writes(store: Store) -> None:
    """Refuse a store whose conditional writes do not refuse: its leases would fence nothing."""
    name = "probe-conditional-write"
    await store.delete(name)
    etag = await store.put(name, b"1", create=True)
    try:
        await store.put(name, b"2", create=True)
    except Conflict:
        pass
    else:
        raise UserError(
            f"the state location {store.url} ignores If-None-Match (a conditional write succeeded twice), "
            "so a worker presumed dead could overwrite a newer checkpoint: use AWS S3 or a local --state directory"
        )
    try:
        await store.put(name, b"3", if_match='"0"')
    except Conflict:
        pass
    else:
        raise UserError(
            f"the state location {store.url} ignores If-Match (a conditional write with a stale ETag succeeded): "
            "use AWS S3 or a local --state directory"
        )
    del etag
    await store.delete(name)
