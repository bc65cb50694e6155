"""`backfill verify`: compare the source's and the replica's histories, key by key.

    shards ─► joiners ×L (source keys ⋈ replica keys, both in key order) ─► comparers ×M ─► report

Two ways to pair versions:
- with a manifest: each source version with the replica version the copy recorded
  (and a replica version with the same ID, which S3 replication makes);
- without: a key's two histories aligned in order (kind, size, ETag).

A pair is identical when ETags are equal. Otherwise: a common checksum decides;
else two plain MD5 ETags (single part, no SSE-KMS) decide; else `--deep` compares
content; else the pair is *unverifiable*, with the reason — never silently equal.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from backfill.config import VerifyConfig, rebase
from backfill.errors import ObjectError, UserError
from backfill.manifest import Manifest
from backfill.models import Shard, Version
from backfill.pacing import AdaptiveLimiter, Pacer, RateLimiter
from backfill.pipeline.evidence import Verdict, by_heads
from backfill.pipeline.lister import key_pages
from backfill.pipeline.replication import BATCH_REPLICATION, REPLICA, Pairing, Scope, detect, pair_replicated
from backfill.pipeline.shards import AUTO_TARGET, discover
from backfill.progress import Display
from backfill.report import Difference, ReportWriter
from backfill.s3 import SSE_C, Bucket, Sessions, open_bucket

MAX_JOINERS = 8
CATEGORIES = (
    "missing_in_replica",
    "extra_in_replica",
    "size_differs",
    "content_differs",
    "history_differs",
    "current_differs",
    "unverifiable",
)


@dataclass(slots=True)
class VerifyCounters:
    keys: int = 0
    versions: int = 0  # source versions and delete markers looked at
    identical: int = 0
    by: Counter[str] = field(default_factory=Counter)  # how identical pairs were proven
    differences: Counter[str] = field(default_factory=Counter)

    @property
    def different(self) -> int:
        return sum(self.differences.values())

    def line(self) -> str:
        return (
            f"{self.keys:,} keys, {self.versions:,} versions compared, "
            f"{self.identical:,} identical, {self.different:,} differ"
        )

    def frame(self) -> tuple[int, int | None, str]:
        return self.versions, None, f"{self.different:,} differ"


@dataclass(slots=True)
class KeyPair:
    key: str  # source key
    source: list[Version]  # oldest first
    replica: list[Version]  # oldest first


class Verifier:
    def __init__(
        self, cfg: VerifyConfig, src: Bucket, dst: Bucket, report: ReportWriter, manifest: Manifest | None
    ) -> None:
        self.cfg = cfg
        self.src = src
        self.dst = dst
        self.report = report
        self.manifest = manifest
        self.counters = VerifyCounters()
        self.replication: Scope | None = None  # the source's live replication into the replica

    # --- keys -----------------------------------------------------------------

    def dest_key(self, key: str) -> str:
        return rebase(key, self.cfg.source.url.prefix, self.cfg.dest.url.prefix)

    def source_key(self, dkey: str) -> str:
        return rebase(dkey, self.cfg.dest.url.prefix, self.cfg.source.url.prefix)

    def _dest_bound(self, bound: str | None) -> str | None:
        return None if bound is None else self.dest_key(bound)

    async def _histories(
        self, bucket: Bucket, prefix: str, after: str | None, upto: str | None
    ) -> AsyncIterator[tuple[str, list[Version]]]:
        async for complete, _done in key_pages(bucket, prefix, after, upto, first_page=1000):
            for newest_first in complete:
                yield newest_first[0].key, newest_first[::-1]

    async def join(self, shard: Shard, out: MemoryObjectSendStream[KeyPair]) -> None:
        """Both sides of one shard, merged by key (replica keys mapped back to source keys)."""
        src = self._histories(self.src, shard.prefix, shard.after, shard.upto)
        dst = self._histories(
            self.dst, self.cfg.dest.url.prefix, self._dest_bound(shard.after), self._dest_bound(shard.upto)
        )
        a = await anext(src, None)
        b = await anext(dst, None)
        while a is not None or b is not None:
            bkey = self.source_key(b[0]) if b is not None else None
            if b is None or (a is not None and bkey is not None and a[0] < bkey):
                assert a is not None
                await out.send(KeyPair(a[0], a[1], []))
                a = await anext(src, None)
            elif a is None or (bkey is not None and bkey < a[0]):
                assert bkey is not None and b is not None
                await out.send(KeyPair(bkey, [], b[1]))
                b = await anext(dst, None)
            else:
                await out.send(KeyPair(a[0], a[1], b[1]))
                a = await anext(src, None)
                b = await anext(dst, None)

    # --- comparing --------------------------------------------------------------

    def _select(self, history: list[Version]) -> list[Version]:
        if self.cfg.versions == "latest":
            return [] if not history or history[-1].is_delete_marker else history[-1:]
        return history

    async def compare(self, pair: KeyPair) -> None:
        s, d = self._select(pair.source), self._select(pair.replica)
        self.counters.keys += 1
        self.counters.versions += len(s)
        replicated = self.replication is not None and self.replication.rule_for(pair.key) is not None
        if self.manifest is not None and replicated:
            await self._compare_recorded_replicated(pair.key, s, d)
        elif self.manifest is not None:
            await self._compare_recorded(pair.key, s, d)
        elif replicated and [_sig(v) for v in s] != [_sig(v) for v in d]:
            p = await self._pair_replicated(pair.key, s, d)
            await self._compare_aligned(pair.key, p.source_rest, p.replica_rest)
        else:
            await self._compare_aligned(pair.key, s, d)
        if s and d and not await self._same_current(pair.key, s[-1], d[-1]):
            what = "a delete marker" if d[-1].is_delete_marker else f"{d[-1].size} bytes, ETag {d[-1].etag}"
            self._diff("current_differs", pair.key, s[-1], d[-1], f"the replica's current version is {what}")

    async def _same_current(self, key: str, s: Version, d: Version) -> bool:
        """Whether the replica's current version may be the source's: the listing says so, or, for ETags that
        are no MD5s (SSE-KMS), a common checksum does. Undecided is not called different (the pair's own
        comparison reports it unverifiable)."""
        if _compatible(s, d):
            return True
        if s.is_delete_marker or d.is_delete_marker or s.size != d.size:
            return False
        verdict, _how = await self._decide(key, s, d)
        return verdict is not False

    async def _is_replica(self, key: str, r: Version) -> bool:
        """Whether replication wrote this replica version (its REPLICA status; a delete marker shows none)."""
        if r.is_delete_marker:
            return False
        try:
            h = await self.dst.head(self.dest_key(key), r.version_id)
        except ObjectError:
            return False
        return h.get("ReplicationStatus") == REPLICA

    async def _pair_replicated(
        self, key: str, s: list[Version], d: list[Version], *, recorded_fix: str | None = None
    ) -> Pairing:
        """Take out what replication delivered (same ID or REPLICA) and the final copy, comparing those pairs."""
        ids = {v.version_id for v in s}
        flags = {r.version_id: await self._is_replica(key, r) for r in d if r.version_id not in ids}
        p = pair_replicated(s, d, lambda r: flags.get(r.version_id, False), recorded_fix=recorded_fix)
        for a, b in p.replicated:
            await self._compare_pair(key, a, b)
        if p.fix is not None:
            self.counters.by["current-version copy"] += 1
        return p

    async def _compare_recorded_replicated(self, key: str, s: list[Version], d: list[Version]) -> None:
        """With a manifest, beside live replication: the backfill's copies by the manifest, the rest as replicated."""
        assert self.manifest is not None
        rows = self.manifest.versions_of(key)
        fix = self.manifest.current_fix_of(key)
        theirs_states = {None, "left_to_replication"}
        s_theirs = [
            v
            for v in s
            if rows.get(v.version_id, (None, "", ""))[0] in theirs_states or rows[v.version_id][2] == BATCH_REPLICATION
        ]
        s_ours = [v for v in s if v not in s_theirs]
        ours = {rows[v.version_id][1] for v in s_ours if rows[v.version_id][1]}
        d_ours = [r for r in d if r.version_id in ours]
        d_theirs = [r for r in d if r.version_id not in ours and r.version_id != fix]
        if fix is not None and any(r.version_id == fix for r in d):
            self.counters.by["current-version copy"] += 1
        await self._compare_recorded(key, s_ours, d_ours)
        p = await self._pair_replicated(key, s_theirs, d_theirs, recorded_fix="")
        for v in p.source_rest:
            self._absent(key, v, extra=False, why="written after the replication rule: not (yet) in the replica")
        for r in p.replica_rest:
            self._absent(key, r, extra=True, why="in the replica: neither a copy of the backfill nor a REPLICA")

    def _diff(self, category: str, key: str, s: Version | None, d: Version | None, detail: str) -> None:
        self.counters.differences[category] += 1
        self.report.write(
            Difference(
                category,
                key,
                s.version_id if s else "",
                self.dest_key(key),
                d.version_id if d else "",
                detail,
            )
        )

    def _absent(self, key: str, v: Version, *, extra: bool, why: str = "") -> None:
        if v.is_delete_marker:
            where = "replica has a delete marker the source lacks" if extra else "delete marker missing in the replica"
            self._diff("history_differs", key, None if extra else v, v if extra else None, where)
        elif extra:
            self._diff("extra_in_replica", key, None, v, why or f"{v.size} bytes, not in the source's history")
        else:
            self._diff("missing_in_replica", key, v, None, why or f"{v.size} bytes")

    async def _compare_aligned(self, key: str, s: list[Version], d: list[Version]) -> None:
        sig_s = [(v.is_delete_marker, v.size, v.etag) for v in s]
        sig_d = [(v.is_delete_marker, v.size, v.etag) for v in d]
        if len(s) == len(d) and sig_s != sig_d and sorted(sig_s) == sorted(sig_d):
            order = " ".join("M" if v.is_delete_marker else "V" for v in d)
            self._diff("history_differs", key, None, None, f"same versions in another order (replica: {order})")
            return
        i = j = 0
        while i < len(s) and j < len(d):
            if _compatible(s[i], d[j]) or len(s) - i == len(d) - j:
                await self._compare_pair(key, s[i], d[j])
                i, j = i + 1, j + 1
            elif len(s) - i > len(d) - j:
                self._absent(key, s[i], extra=False)
                i += 1
            else:
                self._absent(key, d[j], extra=True)
                j += 1
        for v in s[i:]:
            self._absent(key, v, extra=False)
        for v in d[j:]:
            self._absent(key, v, extra=True)

    async def _compare_recorded(self, key: str, s: list[Version], d: list[Version]) -> None:
        assert self.manifest is not None
        rows = self.manifest.versions_of(key)  # source version id → (state, replica version id, why)
        by_id = {v.version_id: v for v in d}
        used: set[str] = set()
        last_position = -1
        for v in s:
            state, rvid, why = rows.get(v.version_id, (None, "", ""))
            target = by_id.get(rvid) if rvid else by_id.get(v.version_id)  # replication keeps version IDs
            if target is None:
                if state is None:
                    reason = "not in the manifest (written after the backfill listed this key?)"
                elif rvid:
                    reason = f"the recorded replica version {rvid} is gone"
                else:
                    reason = f"the backfill recorded it as {state}" + (f": {why}" if why else "")
                self._absent(key, v, extra=False, why=reason)
                continue
            used.add(target.version_id)
            position = d.index(target)
            if position < last_position:
                self._diff("history_differs", key, v, target, "replica version out of order")
            last_position = max(last_position, position)
            await self._compare_pair(key, v, target)
        fix = self.manifest.current_fix_of(key)  # a final copy of the newest version, after a late copy
        for r in d:
            if r.version_id == fix and r.version_id not in used:
                self.counters.by["current-version copy"] += 1
            elif r.version_id not in used:
                self._absent(key, r, extra=True, why="in the replica, not recorded by the backfill")

    async def _compare_pair(self, key: str, s: Version, d: Version) -> None:
        c = self.counters
        if s.is_delete_marker and d.is_delete_marker:
            c.identical += 1
            c.by["delete marker"] += 1
            return
        if s.is_delete_marker != d.is_delete_marker:
            what = (
                "the source has a delete marker where the replica has an object"
                if s.is_delete_marker
                else ("the replica has a delete marker where the source has an object")
            )
            self._diff("history_differs", key, s, d, what)
            return
        if s.size != d.size:
            self._diff("size_differs", key, s, d, f"source {s.size} bytes, replica {d.size}")
            return
        if s.etag and s.etag == d.etag:
            c.identical += 1
            c.by["etag"] += 1
            return
        verdict, how = await self._decide(key, s, d)
        if verdict is True:
            c.identical += 1
            c.by[how] += 1
        elif verdict is False:
            self._diff("content_differs", key, s, d, how)
        else:
            self._diff("unverifiable", key, s, d, how)

    async def _decide(self, key: str, s: Version, d: Version) -> tuple[bool | None, str]:
        """Different ETags, same size: (True identical | False different | None unknown, how/why)."""
        try:
            hs = await self.src.head(key, s.version_id, checksums=True)
            hd = await self.dst.head(self.dest_key(key), d.version_id, checksums=True)
        except ObjectError as exc:
            if exc.code == SSE_C or "400" in str(exc) or "BadRequest" in str(exc):
                return None, "HeadObject refused (SSE-C encrypted?): pass --source-sse-c-key / --dest-sse-c-key"
            raise
        verdict, how = by_heads(s, d, hs, hd)
        if verdict is not Verdict.UNKNOWN:
            return verdict is Verdict.SAME, how
        if self.cfg.deep:
            same = await self._same_content(key, s, d)
            return same, "content compared" if same else "content differs (compared byte by byte)"
        why = "multipart ETags of different layouts" if ("-" in s.etag or "-" in d.etag) else "SSE-KMS ETags"
        return None, f"{why} and no common checksum; --deep compares the content"

    async def _same_content(self, key: str, s: Version, d: Version) -> bool:
        a, b = await _digest(self.src, key, s.version_id), await _digest(self.dst, self.dest_key(key), d.version_id)
        return a == b

    async def comparer(self, pairs: MemoryObjectReceiveStream[KeyPair]) -> None:
        async with pairs:
            async for pair in pairs:
                await self.compare(pair)


def _sig(v: Version) -> tuple[bool, int, str]:
    return (v.is_delete_marker, v.size, v.etag)


def _compatible(s: Version, d: Version) -> bool:
    if s.is_delete_marker or d.is_delete_marker:
        return s.is_delete_marker == d.is_delete_marker
    return s.size == d.size and (s.etag == d.etag or "-" in s.etag or "-" in d.etag)


async def _digest(bucket: Bucket, key: str, version_id: str) -> str:
    """SHA-256 of one version's content, streamed in 1 MiB chunks (bounded memory)."""
    h = hashlib.sha256()
    body: Any = await bucket.get_body(key, version_id)
    try:
        while chunk := await body.read(1024 * 1024):
            h.update(chunk)
    finally:
        body.close()
    return h.hexdigest()


@dataclass(slots=True)
class VerifyResult:
    counters: VerifyCounters
    report: str | None
    mode: str

    @property
    def exit_code(self) -> int:
        return 1 if self.counters.different else 0


async def run_verify(cfg: VerifyConfig, *, log: Any = None) -> VerifyResult:
    rate = RateLimiter(cfg.max_rps)
    list_pacer = Pacer(None, rate)
    head_pacer = Pacer(AdaptiveLimiter(cfg.concurrency, floor=min(4, cfg.concurrency)), rate)
    manifest: Manifest | None = None
    if cfg.manifest is not None:
        manifest = Manifest.open(cfg.manifest, None, create=False)
        job = manifest.job()
        if (job.get("source"), job.get("dest")) != (str(cfg.source.url), str(cfg.dest.url)):
            manifest.close()
            raise UserError(
                f"{cfg.manifest} records a backfill of {job.get('source')} → {job.get('dest')}, "
                f"not {cfg.source.url} → {cfg.dest.url}: pass the matching --manifest, or none"
            )
    try:
        sessions = Sessions()  # the two sides share one session when they share a profile
        async with (
            open_bucket(cfg.source, "source", head_pacer, cfg.concurrency + 8, list_pacer, sessions) as src,
            open_bucket(cfg.dest, "replica", head_pacer, cfg.concurrency + 8, list_pacer, sessions) as dst,
        ):
            with ReportWriter(cfg.report) as report:
                v = Verifier(cfg, src, dst, report, manifest)
                v.replication = await detect(src, dst.name, cfg.source.url.prefix, cfg.dest.url.prefix, out=log)
                shards = await discover(src, cfg.source.url.prefix, cfg.shards or AUTO_TARGET)
                send, recv = anyio.create_memory_object_stream[KeyPair](cfg.concurrency * 4)
                shard_send, shard_recv = anyio.create_memory_object_stream[Shard](len(shards))
                for s in shards:
                    shard_send.send_nowait(s)
                shard_send.close()

                async def joiner(
                    shards_in: MemoryObjectReceiveStream[Shard], out: MemoryObjectSendStream[KeyPair]
                ) -> None:
                    async with shards_in, out:
                        async for shard in shards_in:
                            await v.join(shard, out)

                async with anyio.create_task_group() as bg:
                    bg.start_soon(Display(v.counters, "backfill verify", cfg.progress_interval, log).run)
                    async with anyio.create_task_group() as tg:
                        for _ in range(cfg.concurrency):
                            tg.start_soon(v.comparer, recv.clone())
                        recv.close()
                        async with send, shard_recv:
                            for _ in range(min(MAX_JOINERS, len(shards))):
                                tg.start_soon(joiner, shard_recv.clone(), send.clone())
                    bg.cancel_scope.cancel()
                return VerifyResult(v.counters, cfg.report, "manifest" if manifest else "histories")
    finally:
        if manifest is not None:
            manifest.close()
