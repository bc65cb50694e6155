"""The manifest's SQLite schema: its tables, the migrations from older schemas, and the conditions its
queries share with its indexes (backfill/manifest.py reads and writes it; nothing else needs SQL).
"""

from __future__ import annotations

import re
import sqlite3

SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE job (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE shard (
    id INTEGER PRIMARY KEY,
    prefix TEXT NOT NULL,
    after TEXT,            -- exclusive lower bound (NULL: open)
    upto TEXT,             -- inclusive upper bound (NULL: open)
    marker TEXT,           -- resume listing after this key (all its versions are in `version`)
    listed INTEGER NOT NULL DEFAULT 0   -- 1: the whole shard is in `version`
);
-- One row per version or delete marker. seq: position in the key's history, 0 = oldest.
-- state: 0 pending, 1 copied, 2 failed, 3 skipped. dm: 1 for a delete marker.
-- sc: storage class when not STANDARD. why: the reason for failed/skipped.
CREATE TABLE version (
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    shard INTEGER NOT NULL,
    vid TEXT NOT NULL,
    state INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT,
    dm INTEGER,
    sc TEXT,
    rvid TEXT,
    why TEXT,
    PRIMARY KEY (key, seq)
) WITHOUT ROWID;
-- Small: holds only unfinished rows (pending, failed), which a resume must revisit.
CREATE INDEX version_todo ON version (shard, key, seq) WHERE state IN (0, 2);
"""

# Schema changes, each from user_version n-1 to n: a manifest of an older schema is upgraded when a
# copy opens it. (Statements are split at semicolons: none in comments.)
MIGRATIONS = {
    2: """
-- Multipart uploads begun in the replica and not yet completed or aborted (written ahead).
-- key: the replica's key. upload_id: NULL until CreateMultipartUpload answered.
-- started: the local time (Unix seconds) just before CreateMultipartUpload was sent.
CREATE TABLE upload (token TEXT PRIMARY KEY, key TEXT NOT NULL, upload_id TEXT, started REAL NOT NULL) WITHOUT ROWID;
""",
    3: """
-- attempts: outcomes recorded for the version (runs that tried it). failed_at: Unix time of its last failure.
ALTER TABLE version ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE version ADD COLUMN failed_at REAL;
-- Skipped versions that a later run may be able to copy (archived ones once restored, SSE-C ones once the
-- key is given): a resume revisits them too. The WHERE is RETRY_WHERE, word for word (SQLite uses a partial
-- index only for a query with the same condition).
CREATE INDEX IF NOT EXISTS version_retry ON version (shard, key, seq)
    WHERE state = 3 AND (why LIKE 'archived%' OR why LIKE 'SSE-C%');
-- Keys whose replica got a final copy of the source's current version, because live replication had
-- delivered it before the backfill copied older versions on top (backfill/pipeline/replication.py).
-- vid: the source version copied again, rvid: the replica version that copy made (dm 1: a delete marker).
CREATE TABLE IF NOT EXISTS current_fix (key TEXT PRIMARY KEY, vid TEXT, rvid TEXT NOT NULL, dm INTEGER) WITHOUT ROWID;
""",
}
# Skipped versions a later run retries: their reasons begin with these words (pipeline/copier.py writes them).
RETRY_PREFIXES = ("archived", "SSE-C")
RETRY_WHERE = "state = 3 AND (why LIKE 'archived%' OR why LIKE 'SSE-C%')"


_ADD_COLUMN = re.compile(r"ALTER TABLE (\w+) ADD COLUMN (\w+)")


def has_column(c: sqlite3.Connection, stmt: str) -> bool:
    """Whether `stmt` adds a column the table already has (a file whose schema was rebuilt by hand)."""
    m = _ADD_COLUMN.search(stmt)
    return m is not None and m.group(2) in {r[1] for r in c.execute(f"PRAGMA table_info({m.group(1)})")}


MERGED_TABLES = ("shard", "version", "upload", "current_fix")  # the tables a shard's file adds to a merged manifest
