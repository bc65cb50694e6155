"""The values that flow through the pipeline. Frozen and slotted: millions exist over a run."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field


class State(enum.IntEnum):
    """A version's state in the manifest (stored as this small integer)."""

    PENDING = 0  # listed, written ahead of its copy; may be in flight
    COPIED = 1
    FAILED = 2
    SKIPPED = 3  # archived, filtered at copy time, … (the row says why)
    LEFT_TO_REPLICATION = 4  # written after the source's replication rule: S3 replicates it (PENDING/COMPLETED)


@dataclass(frozen=True, slots=True)
class Version:
    """One entry of a key's history: an object version or a delete marker."""

    key: str
    version_id: str
    size: int
    etag: str  # without quotes; "" for a delete marker
    last_modified: str  # ISO-8601 as S3 sent it
    is_delete_marker: bool = False
    storage_class: str = ""  # "" means STANDARD
    is_latest: bool = False


@dataclass(frozen=True, slots=True)
class Shard:
    """A slice of the source's key space: keys under `prefix` with after < key <= upto.

    Bounds are plain strings compared as S3 compares keys (UTF-8 bytes); None is
    open. Any strings work as bounds, so the slices always partition the keys.
    """

    id: int
    prefix: str
    after: str | None
    upto: str | None


@dataclass(slots=True)
class Item:
    """A version in a key's job: its position in the history and what became of it."""

    seq: int
    version: Version
    state: State = State.PENDING
    replica_version_id: str = ""
    why: str = ""


@dataclass(slots=True)
class KeyJob:
    """The unfinished part of one key's history, oldest first; copied in order.

    `recheck` is set for versions found unfinished in the manifest at start: one
    of them may have been in flight when the last run died, so the replica is
    looked at before it is copied again.
    """

    shard: int
    key: str
    items: list[Item]
    recheck: bool = False
    known: frozenset[str] = frozenset()  # replica version IDs the manifest has for this key
    # The key's newest version copied by an earlier run (not in `items`), with its replica version ID: a
    # version of `items` older than it, copied now, lands above it (pipeline/copier.py, the late copy).
    top: Item | None = None
    finished: Callable[[], None] | None = None  # called once a copier is done with the job (lister.feed_in_order)
    page: Page | None = None  # the listing page it came from (live replication's check after the copies)


@dataclass(slots=True, eq=False)
class Page:
    """The key range of one listing page, `after < key <= upto` under `prefix`, while its keys are copied.

    Beside live replication, a key whose versions are all from before the rule is checked once more after
    its copies: was anything written since it was listed (pipeline/copier.py)? Its check waits in `cold`
    until the copiers are done with every key of the page (`left`), then one listing of the range
    answers it for all of them at once, instead of a HEAD per key.
    """

    prefix: str
    after: str | None
    upto: str
    left: int
    cold: list[KeyJob] = field(default_factory=list)
