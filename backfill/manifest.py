"""The SQLite manifest: what a job is, how far each shard got, and every version's fate.

Durability protocol (why a crash never duplicates a version):
1. A lister commits a page's complete keys as PENDING rows, together with the
   shard's new resume marker, in one transaction, *before* any of them is copied.
2. A copy's outcome is committed later, in a batch.
So after a crash, every version that may have reached the replica is in the
manifest: COPIED (done), or PENDING/FAILED (checked against the replica before it
is copied again). Listing resumes after the marker; nothing listed is listed twice.

Multipart uploads follow the same rule (`upload`): a row is committed before
CreateMultipartUpload, its upload ID before the first UploadPartCopy, and the row
is deleted once the upload is completed or aborted. A run aborts the uploads an
earlier run left open, so a crash leaves no parts behind in the replica.

One writer (pipeline.checkpoint) owns the connection during a run. State is
shard-local (every row carries its shard) so a shard can later move elsewhere.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backfill.errors import UserError, first_error
from backfill.models import Item, KeyJob, Shard, State, Version
from backfill.schema import (
    MERGED_TABLES,
    MIGRATIONS,
    RETRY_WHERE,
    SCHEMA,
    SCHEMA_VERSION,
    has_column,
)


@dataclass(frozen=True, slots=True)
class OpenUpload:
    """A multipart upload that a run began in the replica and did not see completed or aborted."""

    token: str
    key: str
    upload_id: str | None  # None: CreateMultipartUpload was sent, its answer never recorded
    started: float


def manifest_error(exc: BaseException, path: str) -> UserError | None:
    """An SQLite failure of the manifest at `path` (in `exc`, or in a group) as one line for the user.

    None when `exc` holds no SQLite error.
    """
    err = first_error(exc, sqlite3.Error)
    if err is None:
        return None
    code = (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF  # the primary code of an extended one
    text = " ".join(str(err).split())  # SQLite's integrity reports span lines; the user gets one
    if code == sqlite3.SQLITE_FULL or "disk is full" in text:
        return UserError(
            f"the manifest's disk is full ({path}): free space or pass --manifest on another disk; rerun to resume"
        )
    if code == sqlite3.SQLITE_NOTADB or "not a database" in text:
        return UserError(f"{path} is not a backfill manifest ({text}): pass another --manifest")
    if code == sqlite3.SQLITE_CORRUPT or "malformed" in text:
        return UserError(
            f"the manifest {path} is damaged ({text}): restore a copy of it, or try `sqlite3 {path} .recover`; "
            "a new --manifest would copy again the versions already in the replica"
        )
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM) or "readonly" in text:
        return UserError(f"cannot write the manifest {path} ({text}): pass --manifest in a writable directory")
    if code == sqlite3.SQLITE_IOERR:
        return UserError(f"I/O error on the manifest {path} ({text}): check its disk; rerun to resume")
    return UserError(f"the manifest {path} failed: {text}")


@dataclass(frozen=True, slots=True)
class Totals:
    versions: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class Summary:
    job: dict[str, str]
    shards: int
    shards_listed: int
    by_state: dict[str, Totals]
    delete_markers: int
    current_fixes: int = 0  # keys that got a final copy of their current version

    def count(self, state: State) -> int:
        return self.by_state.get(state.name.lower(), Totals()).versions

    def totals(self) -> dict[str, int]:
        """The job's counts, as a run's summary reports them."""
        return {
            "versions": sum(t.versions for t in self.by_state.values()),
            "copied": self.count(State.COPIED),
            "failed": self.count(State.FAILED),
            "skipped": self.count(State.SKIPPED),
            "pending": self.count(State.PENDING),
            "left_to_replication": self.count(State.LEFT_TO_REPLICATION),
            "current_fixes": self.current_fixes,
            "shards": self.shards,
            "shards_listed": self.shards_listed,
        }


class Manifest:
    def __init__(self, path: str, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self._durable = True  # synchronous=FULL, as _prepare sets it
        self._wal = False

    # --- opening -------------------------------------------------------------

    @classmethod
    def open(cls, path: str, identity: dict[str, str] | None, *, create: bool) -> Manifest:
        """Open (or create) a manifest. `identity` refuses a manifest of another job."""
        p = Path(path)
        exists = p.exists()
        if not exists and not create:
            raise UserError(f"no manifest at {path}: pass --manifest with the file that `backfill copy` printed")
        if not exists:
            # Created 0600 before SQLite touches it: the file names buckets and keys.
            try:
                fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except OSError as exc:
                raise UserError(
                    f"cannot create the manifest {path} ({exc.strerror}): pass --manifest in a writable directory"
                ) from None
            os.close(fd)
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(p, isolation_level=None, check_same_thread=False)
            m = cls(path, conn)
            m._prepare(identity, check=exists and create)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            err = manifest_error(exc, path)
            if err is not None:
                raise err from None
            raise
        for f in (p, Path(f"{path}-wal"), Path(f"{path}-shm")):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f, 0o600)
        return m

    def _prepare(self, identity: dict[str, str] | None, *, check: bool) -> None:
        """Set the connection up; create, check and (for a run, `identity` given) upgrade the schema.

        `check`: an existing manifest that a copy will write to is checked whole
        first (`PRAGMA quick_check`, ~0.25 s per million versions), so that a
        damaged one is refused before anything is copied. `status` and `verify`
        read an older schema as it is.
        """
        conn, path = self.conn, self.path
        self._wal = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"  # else every commit is durable
        conn.execute("PRAGMA synchronous=FULL")  # a committed write-ahead row must survive a power cut
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise UserError(f"{path} is not a backfill manifest: pass another --manifest")
            if identity is None:
                raise UserError(f"{path} is an empty file, not a backfill manifest: pass another --manifest")
            self._create(identity)
            return
        if version > SCHEMA_VERSION:
            raise UserError(
                f"{path} is a manifest of schema {version}; this backfill reads schema {SCHEMA_VERSION} and older: "
                "use the backfill version that wrote it"
            )
        if check:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError(f"database disk image is malformed: {'; '.join(problems)}")
        if identity is not None:
            self._check_identity(identity)
            if version < SCHEMA_VERSION:
                self._migrate(version)

    def _migrate(self, version: int) -> None:
        with self.transaction() as c:
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in MIGRATIONS[target].split(";"):
                    if stmt.strip() and not has_column(c, stmt):
                        c.execute(stmt)
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _create(self, identity: dict[str, str]) -> None:
        with self.transaction():
            for stmt in (SCHEMA + ";".join(MIGRATIONS.values())).split(";"):
                if stmt.strip():
                    self.conn.execute(stmt)
            self.conn.executemany("INSERT INTO job VALUES (?, ?)", sorted(identity.items()))
            self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _check_identity(self, identity: dict[str, str]) -> None:
        stored = self.job()
        if not stored:
            return
        diff = [k for k in sorted(identity) if stored.get(k, "") != identity[k]]
        if diff:
            have = ", ".join(f"{k}={stored.get(k, '')!r}" for k in diff)
            want = ", ".join(f"{k}={identity[k]!r}" for k in diff)
            raise UserError(
                f"{self.path} belongs to another job ({have}; this run has {want}): "
                "pass a different --manifest, or rerun with that job's arguments"
            )

    def reader(self) -> Manifest:
        """A second, read-only connection (each read sees what was committed by then)."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        return Manifest(self.path, conn)

    def snapshot(self) -> Manifest:
        """A second, read-only connection that sees the manifest as it is now, and only that."""
        m = self.reader()
        m.conn.execute("BEGIN")
        m.conn.execute("SELECT count(*) FROM shard").fetchone()  # pins the WAL snapshot
        return m

    def snapshot_to(self, target: Path) -> None:
        """A consistent single-file copy of this (live, WAL) manifest at `target`, created 0600.

        Opens its own connections: safe from a thread while the writer goes on.
        """
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        source = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")  # one file: no -wal beside it to carry along
        finally:
            copy.close()
            source.close()

    def merge_from(self, path: Path) -> None:
        """Add the rows of another manifest of the same job (a shard's file) to this one, in one transaction.

        Shards, versions and open multipart uploads are copied by column name: a column the
        other file lacks takes its default; a table it lacks (an older schema) adds nothing.
        """
        self.conn.execute("ATTACH DATABASE ? AS other", (str(path),))
        try:
            with self.transaction() as c:
                for table in MERGED_TABLES:
                    mine = [r[1] for r in c.execute(f"PRAGMA main.table_info({table})")]
                    theirs = {r[1] for r in c.execute(f"PRAGMA other.table_info({table})")}
                    cols = ", ".join(f'"{n}"' for n in mine if n in theirs)
                    if cols:
                        c.execute(f"INSERT INTO main.{table} ({cols}) SELECT {cols} FROM other.{table}")
        finally:
            self.conn.execute("DETACH DATABASE other")

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """durable: fsync the commit (synchronous=FULL). Else (NORMAL, in WAL mode) it survives a crash of the
        process, not a power cut, until the next durable commit fsyncs the write-ahead log it is in."""
        durable = durable or not self._wal
        if durable != self._durable:
            self.conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            if self.conn.in_transaction:  # SQLite may have rolled back already (a full disk, an I/O error)
                self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    # --- job and shards ------------------------------------------------------

    def job(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT name, value FROM job").fetchall())

    def shards(self) -> list[tuple[Shard, str | None, bool]]:
        """(shard, resume marker, listed) for every shard, in key order."""
        rows = self.conn.execute("SELECT id, prefix, after, upto, marker, listed FROM shard ORDER BY id")
        return [(Shard(r[0], r[1], r[2], r[3]), r[4], bool(r[5])) for r in rows]

    def save_shards(self, shards: Iterable[Shard]) -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO shard (id, prefix, after, upto) VALUES (?, ?, ?, ?)",
                [(s.id, s.prefix, s.after, s.upto) for s in shards],
            )

    # --- the writer's operations (called in batches by the checkpoint writer) -----

    @staticmethod
    def write_listed(c: sqlite3.Connection, jobs: list[KeyJob], shard: int, marker: str | None, done: bool) -> None:
        c.executemany(
            "INSERT INTO version (key, seq, shard, vid, state, size, etag, dm, sc, rvid, why) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    j.key,
                    it.seq,
                    shard,
                    it.version.version_id,
                    int(it.state),
                    it.version.size,
                    it.version.etag or None,
                    1 if it.version.is_delete_marker else None,
                    it.version.storage_class or None,
                    it.replica_version_id or None,
                    it.why or None,
                )
                for j in jobs
                for it in j.items
            ],
        )
        if marker is not None or done:
            c.execute(
                "UPDATE shard SET marker = coalesce(?, marker), listed = ? WHERE id = ?",
                (marker, 1 if done else 0, shard),
            )

    @staticmethod
    def write_spill(c: sqlite3.Connection, shard: int, versions: list[Version], first: int) -> None:
        """Part of a key's history too long to hold while it is listed (pipeline/lister.py), newest first from
        position `first` (0: afresh). It waits in a TEMP table (gone with the connection: a key listed in part
        is listed again) until its end is listed, then is written ahead with that page (settle_spill)."""
        if first == 0:
            c.execute("CREATE TABLE IF NOT EXISTS temp.spill (shard, n, key, vid, size, etag, dm, sc)")
            c.execute("DELETE FROM temp.spill WHERE shard = ?", (shard,))
        rows = [
            (shard, n, v.key, v.version_id, v.size, v.etag or None, v.is_delete_marker or None, v.storage_class or None)
            for n, v in enumerate(versions, first)
        ]
        c.executemany("INSERT INTO temp.spill VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    @staticmethod
    def settle_spill(c: sqlite3.Connection, shard: int) -> None:
        """The shard's spilled history as pending versions, seq 0 the oldest (in the page's transaction)."""
        c.execute(
            "INSERT INTO version (key, seq, shard, vid, state, size, etag, dm, sc) "
            "SELECT key, (SELECT count(*) FROM temp.spill WHERE shard = ?1) - 1 - n, shard, vid, 0, size, etag, dm, sc "
            "FROM temp.spill WHERE shard = ?1 ORDER BY n DESC",  # oldest first: appended, pages filled
            (shard,),
        )
        c.execute("DELETE FROM temp.spill WHERE shard = ?", (shard,))

    @staticmethod
    def block_after(c: sqlite3.Connection, key: str, seq: int, why: str) -> None:
        """A version of `key` failed: its pending versions after `seq` fail behind it (copied in order)."""
        c.execute(
            "UPDATE version SET state = 2, why = ?, attempts = attempts + 1, "
            "failed_at = (julianday('now') - 2440587.5) * 86400 WHERE key = ? AND seq > ? AND state = 0",
            (why, key, seq),
        )

    def history(self, key: str, after_seq: int, limit: int) -> list[Item]:
        """Up to `limit` versions of `key` after position `after_seq`, oldest first."""
        rows = self.conn.execute(
            "SELECT seq, vid, size, etag, dm, sc FROM version WHERE key = ? AND seq > ? ORDER BY seq LIMIT ?",
            (key, after_seq, limit),
        )
        return [Item(q, Version(key, i, n, e or "", "", bool(d), c or "")) for q, i, n, e, d, c in rows]

    @staticmethod
    def set_job_value(c: sqlite3.Connection, name: str, value: str) -> None:
        """Run bookkeeping beside the job's identity (not part of it)."""
        c.execute("INSERT OR REPLACE INTO job VALUES (?, ?)", (name, value))

    def set_first_run_started(self, when: str) -> None:
        """When the job's first run began (ISO-8601): replica versions older than that are not its copies."""
        with self.transaction() as c:
            Manifest.set_job_value(c, "first_run_started", when)

    def set_clean(self, clean: bool) -> None:
        """False while a run may have copies in flight; True once it ended without abandoning any."""
        with self.transaction() as c:
            Manifest.set_job_value(c, "clean", "1" if clean else "0")

    @staticmethod
    def write_outcomes(c: sqlite3.Connection, rows: list[tuple[int, str, str, str, int]]) -> None:
        """rows: (state, replica version id, why, key, seq)."""
        c.executemany(
            "UPDATE version SET state = ?1, rvid = nullif(?2, ''), why = nullif(?3, ''), attempts = attempts + 1, "
            "failed_at = CASE WHEN ?1 = 2 THEN (julianday('now') - 2440587.5) * 86400 ELSE failed_at END "
            "WHERE key = ?4 AND seq = ?5",
            rows,
        )

    @staticmethod
    def write_fix(c: sqlite3.Connection, key: str, vid: str, rvid: str, dm: bool) -> None:
        """The final copy of `key`'s current version (source `vid`) made replica version `rvid`."""
        c.execute("INSERT OR REPLACE INTO current_fix VALUES (?, ?, ?, ?)", (key, vid, rvid, 1 if dm else None))

    @staticmethod
    def write_upload(c: sqlite3.Connection, token: str, key: str, upload_id: str | None, started: float) -> None:
        """An upload about to begin (upload_id None), or its ID once CreateMultipartUpload answered."""
        c.execute(
            "INSERT INTO upload (token, key, upload_id, started) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (token) DO UPDATE SET upload_id = excluded.upload_id",
            (token, key, upload_id, started),
        )

    @staticmethod
    def forget_upload(c: sqlite3.Connection, token: str) -> None:
        """The upload was completed or aborted."""
        c.execute("DELETE FROM upload WHERE token = ?", (token,))

    # --- resuming ------------------------------------------------------------

    def open_uploads(self) -> list[OpenUpload]:
        """Multipart uploads begun by earlier runs and not known to be completed or aborted."""
        rows = self.conn.execute("SELECT token, key, upload_id, started FROM upload ORDER BY started")
        return [OpenUpload(t, k, u, s) for t, k, u, s in rows]

    def unfinished(self, shard: int) -> Iterator[KeyJob]:
        """Keys of a shard with pending or failed versions — or skipped ones a later run may copy (archived,
        SSE-C: RETRY_WHERE) — as jobs from the first unfinished one.

        Streams through the two partial indexes, merged by key: a resume holds one key at a time.
        """
        columns = "SELECT key, seq, vid, state, size, etag, dm, sc FROM version"
        todo = self.conn.execute(f"{columns} WHERE shard = ? AND state IN (0, 2) ORDER BY key, seq", (shard,))
        retry = self.conn.execute(f"{columns} WHERE shard = ? AND {RETRY_WHERE} ORDER BY key, seq", (shard,))
        job: KeyJob | None = None
        rows = heapq.merge(todo, retry, key=lambda r: (r[0].encode(), r[1]))
        for key, seq, vid, _state, size, etag, dm, sc in rows:
            if job is None or job.key != key:
                if job is not None:
                    yield job
                known, top = self.recorded_of(key)
                job = KeyJob(shard, key, [], recheck=True, known=known, top=top)
            v = Version(key, vid, size, etag or "", "", bool(dm), sc or "")
            job.items.append(Item(seq, v))
        if job is not None:
            yield job

    def unfinished_keys(self, limit: int) -> list[str]:
        rows = self.conn.execute("SELECT key FROM version WHERE state IN (0, 2) LIMIT ?", (limit,))
        return [r[0] for r in rows]

    def largest_unfinished(self) -> int:
        return int(self.conn.execute("SELECT coalesce(max(size), 0) FROM version WHERE state IN (0, 2)").fetchone()[0])

    def versions_of(self, key: str) -> dict[str, tuple[str, str, str]]:
        """A key's recorded versions: source version ID → (state, replica version ID, why)."""
        rows = self.conn.execute("SELECT vid, state, rvid, why FROM version WHERE key = ?", (key,))
        return {vid: (State(st).name.lower(), rvid or "", why or "") for vid, st, rvid, why in rows}

    def recorded_of(self, key: str) -> tuple[frozenset[str], Item | None]:
        """The replica version IDs recorded for `key` (its copies and its final copy), and its newest copied
        version (with its replica version ID) when nothing newer was left to replication: what the replica's
        current version must stay when a later run copies an older version of the key (pipeline/copier.py)."""
        rows = self.conn.execute(
            "SELECT seq, vid, size, etag, dm, sc, rvid, state FROM version "
            "WHERE key = ? AND (rvid IS NOT NULL OR state = ?) ORDER BY seq",
            (key, int(State.LEFT_TO_REPLICATION)),
        ).fetchall()
        fix = self.current_fix_of(key)
        known = frozenset([*(r[6] for r in rows if r[6]), *([fix] if fix else [])])
        top = None
        if rows and rows[-1][7] == int(State.COPIED) and rows[-1][6]:
            seq, vid, size, etag, dm, sc, rvid, _ = rows[-1]
            top = Item(seq, Version(key, vid, size, etag or "", "", bool(dm), sc or ""), State.COPIED, rvid)
        return known, top

    def current_fix_of(self, key: str) -> str | None:
        """The replica version of `key`'s final current-version copy, if it got one."""
        if not self._fixes():
            return None
        row = self.conn.execute("SELECT rvid FROM current_fix WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    # --- reporting -----------------------------------------------------------

    def summary(self) -> Summary:
        shards = self.conn.execute("SELECT count(*), coalesce(sum(listed), 0) FROM shard").fetchone()
        by_state: dict[str, Totals] = {}
        for state, n, b in self.conn.execute(
            "SELECT state, count(*), coalesce(sum(size), 0) FROM version GROUP BY state"
        ):
            by_state[State(state).name.lower()] = Totals(n, b)
        dms = self.conn.execute("SELECT count(*) FROM version WHERE dm = 1").fetchone()[0]
        fixes = self.conn.execute("SELECT count(*) FROM current_fix").fetchone()[0] if self._fixes() else 0
        return Summary(self.job(), shards[0], shards[1], by_state, dms, fixes)

    def _fixes(self) -> bool:
        """Whether the manifest has the current_fix table (schema 3; a read-only open does not upgrade)."""
        q = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'current_fix'"
        return self.conn.execute(q).fetchone() is not None

    def archived(self) -> int:
        """Versions skipped as archived (GLACIER, DEEP_ARCHIVE, …, not restored): a later run retries them."""
        return int(
            self.conn.execute("SELECT count(*) FROM version WHERE state = 3 AND why LIKE 'archived%'").fetchone()[0]
        )

    def problems(self, limit: int) -> list[dict[str, object]]:
        rows = self.conn.execute(
            "SELECT key, vid, state, why FROM version WHERE state IN (2, 3) ORDER BY state, key, seq LIMIT ?",
            (limit,),
        )
        return [{"key": k, "version_id": v, "state": State(s).name.lower(), "why": w or ""} for k, v, s, w in rows]

    def problem_rows(self, states: Iterable[State]) -> Iterator[dict[str, object]]:
        """Failed and/or skipped versions, for `status --report`: key, source version, state, reason,
        attempts, and the time of the last failure (ISO-8601 UTC, "" when none)."""
        wanted = sorted(int(s) for s in states)
        marks = ",".join("?" * len(wanted))
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(version)")}
        extra = "attempts, failed_at" if "attempts" in columns else "0, NULL"  # a schema-2 manifest: not counted
        rows = self.conn.execute(
            f"SELECT key, vid, state, why, {extra} FROM version WHERE state IN ({marks}) ORDER BY state, key, seq",
            wanted,
        )
        for k, v, s, w, n, at in rows:
            when = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if at else ""
            yield {
                "key": k,
                "source_version_id": v,
                "state": State(s).name.lower(),
                "reason": w or "",
                "attempts": n,
                "last_error_at": when,
            }

    def reasons(self) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT state, why, count(*) FROM version WHERE state IN (2, 3) GROUP BY state, why ORDER BY 3 DESC"
        )
        return {f"{State(s).name.lower()}: {w or '?'}": n for s, w, n in rows}
