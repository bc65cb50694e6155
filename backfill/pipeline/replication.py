"""A backfill beside live replication: which versions are the backfill's, and the replica's current version.

The product's own order is replication first (`backfill setup apply`), then the backfill of what
was there before (`backfill copy`), often days later, on a bucket still being written. S3 then
replicates every version written after the rule went on, keeping its version ID, and HEAD/GET of
such a source version answers `x-amz-replication-status` PENDING, COMPLETED or FAILED; a version
from before the rule answers none; the replica's copy answers REPLICA; ListObjectVersions shows no
status at all (AWS documentation cited in testbed/replicator.py, which emulates all of this).

**Detection** (once per run, `scope_from`). GetBucketReplication on the source (the source
principal; the backfill grant includes `s3:GetReplicationConfiguration`). The rules that matter are
Enabled and have `Destination.Bucket` = the replica's ARN. Each gives a key prefix (`Filter.Prefix`,
`Filter.And.Prefix`, a tag filter counts as "any key": the statuses decide per object; a V1 rule's
`Prefix`) and whether it replicates delete markers (`DeleteMarkerReplication` Enabled; a V1 rule
does, a tag-filtered rule cannot). No configuration (404 ReplicationConfigurationNotFoundError), no
rule into this replica, or a job whose destination prefix differs from its source prefix (replication
writes the same key, the backfill then writes another one): the run is the plain one, with no extra
request besides that one GetBucketReplication. AccessDenied: one warning line, and the plain run
(the README says to re-run `backfill setup grant-backfill`).

**Which versions are whose** (`plan_key`, per key under a rule's prefix, before its copies). The
versions written after the rule went on are the newest ones of a key: a suffix of its history.
  1. A cold key costs one HEAD. If the listed newest entry is an object version, HEAD the key
     *without* a version ID: it answers the current version and its status. Same version as listed
     and no status: every listed version is from before the rule (they are all older), and nothing
     was written since the listing. A newer current version (or a 404: a delete marker since), means
     writes after the listing: the key is *hot* (see the fix below), and the listed newest version
     is HEADed by its ID. If the listed newest entry is a delete marker (which has no status to read:
     HEAD of one answers 405), the newest object version is HEADed by its ID. After the copies, an
     entry written since the listing (another current version; a delete marker on top of a listed
     object version; an object on top of a listed marker) may have been delivered by replication while
     the old versions were being copied, under them. Once the copiers are done with every key of a
     listing page, one listing of the page's key range (`copier.recheck`) shows each cold key's newest
     entry now: a key whose newest entry changed gets the current-version check of a hot key. A
     page of a thousand versions costs one more listing instead of a HEAD per key.
  2. While a HEADed version has a status, the next older object version is HEADed too: a hot key
     costs one HEAD per version written after the rule, plus one.
  3. PENDING or COMPLETED: left to replication (manifest state LEFT_TO_REPLICATION, never
     copied). FAILED: recorded as failed with a reason that names S3 Batch Replication (S3 does not
     retry a FAILED replication; a Batch Replication job with the ReplicationStatus FAILED filter
     does, keeping the version ID); the run exits 1, and a later run HEADs it again: once COMPLETED
     it is left to replication. Copying it instead would put it above newer replicated versions.
     No status: copied, in order, as before.
  4. A delete marker newer than a version replication owns is replication's too (or, under a rule
     that does not replicate delete markers, left out as replication leaves it out). A delete marker
     with only versions from before the rule below it cannot be told apart: it is copied. If it was
     in fact written after the rule and the rule replicates delete markers, the replica holds that
     marker twice, one above the other (the current state, deleted, is the same). This is the one
     duplicate this strategy allows besides the fix below.

**The current version** (`fix_needed`, once per hot key, after its copies). A backfill copy is
always the replica's newest version, so old versions copied after replication delivered newer ones
end on top: the replica's current would be stale. After the key's copies, list the key in the replica
(one ListObjectVersions) and, only if its newest entry is one of the backfill's copies, HEAD the
source key's current version:
  - COMPLETED (it was delivered, and lies below the backfill's copies): copy it once more, a *final
    copy of the current version*, recorded in the manifest as such (table `current_fix`), counted as
    `current_fixes` in the summary, `status` and `--json`;
  - PENDING: nothing to do, replication will put it on top, unless the replica's listing already
    holds a version equal to it below the backfill's copies (S3 sets COMPLETED only after it wrote
    the replica): then as COMPLETED; FAILED: nothing, it is reported and
    Batch Replication will put it on top; no status: the current version is from before the rule;
  - a delete marker (404): under a rule that replicates delete markers, a delete marker on top
    (DeleteObject), unless the replica's newest entry is a marker already.
The replica's history of such a key then reads: the versions replication delivered before the
backfill, the versions from before the rule (copied, in order), then the current version once more
(a copy, not a REPLICA), then whatever replication delivers later. Its current version is the
source's; the extra version is the final copy, one per fixed key. A key's versions left to
replication are recorded only after this check: a run killed before it leaves them pending, so the
next run HEADs the key again and checks it again (a fix that landed unrecorded is then the replica's
newest entry and not one of the backfill's recorded copies, so it is not made twice; it is not
counted either). After a crash, looking for copies the manifest missed (copier.reconcile) passes
over the replica versions replication wrote (a source version's ID, or REPLICA; a delete marker,
which shows no status, is passed over when it does not match), and matches only the versions the
backfill copies.

A version written after that listing of a cold key's page is written after the copies landed, so
replication puts it on top of them. Keys that come from no listing page (resumed, the chunks of a long
history, an inventory's) are HEADed after their copies instead, each on its own. A run killed after a
page's copies and before its listing leaves that check undone for the page's keys (the next run finds
them copied and does not look again): the window of a write, in the seconds of those copies, that
replication also delivered before them. A stopped run (Ctrl-C) makes the checks of its unfinished
pages before it ends. Without replication on the source nothing of this runs: no HEAD, no listing of
the replica, no second listing of the source.

**verify** (both modes) pairs a replica version with a source version by the same version ID (S3
keeps it) or, failing that, by its REPLICA status and content in history order; the final copy of
the current version is recognised (the manifest records it; without a manifest: the replica's newest
entry equal to the source's current, above a REPLICA of it); and it checks every key's current
version: category `current_differs`.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backfill.errors import AccessDenied
from backfill.models import Version
from backfill.s3 import Bucket

PENDING, COMPLETED, FAILED, REPLICA = "PENDING", "COMPLETED", "FAILED", "REPLICA"
OWNED = frozenset({PENDING, COMPLETED})  # statuses of versions replication owns
BATCH_REPLICATION = (
    "replication FAILED for this version (S3 does not retry it): an S3 Batch Replication job with the "
    "ReplicationStatus FAILED filter replicates it; then run this command again"
)


@dataclass(frozen=True, slots=True)
class Rule:
    prefix: str
    delete_markers: bool
    priority: int


@dataclass(frozen=True, slots=True)
class Scope:
    """The source's enabled replication rules into this replica (prefix, delete markers)."""

    rules: tuple[Rule, ...]

    def rule_for(self, key: str) -> Rule | None:
        """The rule that replicates `key` (the highest priority wins, as S3 decides between rules)."""
        best: Rule | None = None
        for r in self.rules:
            if key.startswith(r.prefix) and (best is None or r.priority > best.priority):
                best = r
        return best

    def covers(self, prefix: str) -> bool:
        """Whether any key under `prefix` may be replicated."""
        return any(r.prefix.startswith(prefix) or prefix.startswith(r.prefix) for r in self.rules)


def scope_from(config: Mapping[str, Any] | None, replica_bucket: str) -> Scope | None:
    """The rules of a GetBucketReplication answer (botocore's shape) that replicate into `replica_bucket`."""
    if not config:
        return None
    arn = f"arn:aws:s3:::{replica_bucket}"
    rules: list[Rule] = []
    for i, r in enumerate(config.get("Rules", [])):
        if r.get("Status") != "Enabled" or r.get("Destination", {}).get("Bucket") != arn:
            continue
        f = r.get("Filter")
        if f is None:  # the V1 schema: a top-level Prefix, and delete markers are replicated
            rules.append(Rule(r.get("Prefix", ""), True, -1 - i))
            continue
        tagged = "Tag" in f or bool(f.get("And", {}).get("Tags"))
        prefix = f.get("Prefix", f.get("And", {}).get("Prefix", ""))
        dm = r.get("DeleteMarkerReplication", {}).get("Status") == "Enabled" and not tagged
        rules.append(Rule(prefix or "", dm, int(r.get("Priority", 0))))
    return Scope(tuple(rules)) if rules else None


class Owner(enum.Enum):
    BACKFILL = "copy"  # from before the rule (or a delete marker that cannot tell): copied
    REPLICATION = "left"  # PENDING or COMPLETED (or a delete marker above one): left to replication
    FAILED = "failed"  # replication FAILED: reported, names S3 Batch Replication


@dataclass(slots=True)
class KeyPlan:
    owners: list[Owner]  # one per listed entry, oldest first
    hot: bool  # some version after the rule exists: check the current version after the copies
    heads: int = 0


async def plan_key(
    history: Sequence[Version],
    *,
    head_current: Callable[[], Awaitable[tuple[Version | None, str | None]]],
    head_version: Callable[[Version], Awaitable[str | None]],
) -> KeyPlan:
    """Whose each listed entry of one key is (oldest first); see the module's docstring.

    `head_current()` → (the current version or None for a 404, its status); `head_version(v)` → status.
    """
    owners = [Owner.BACKFILL] * len(history)
    objects = [i for i, v in enumerate(history) if not v.is_delete_marker]
    plan = KeyPlan(owners, hot=False)
    if not objects:
        return plan  # delete markers only (or a resumed key's markers): no status to read, they are copied
    newest = objects[-1]
    status: str | None
    if newest == len(history) - 1:
        current, status = await head_current()
        plan.heads += 1
        if current is None or current.version_id != history[newest].version_id:
            plan.hot = True  # written since the listing (a 404: a delete marker since)
            status = await head_version(history[newest])
            plan.heads += 1
    else:
        # The newest entry is a delete marker, which has no status to read: the newest object version is
        # HEADed by its ID now (and the key, as every key, after its copies).
        status = await head_version(history[newest])
        plan.heads += 1
    oldest_after_rule: int | None = None
    pos = len(objects) - 1
    while status is not None:
        i = objects[pos]
        owners[i] = Owner.FAILED if status == FAILED else Owner.REPLICATION
        oldest_after_rule = i
        plan.hot = True
        pos -= 1
        if pos < 0:
            break
        status = await head_version(history[objects[pos]])
        plan.heads += 1
    if oldest_after_rule is not None:
        for i in range(oldest_after_rule + 1, len(history)):
            if history[i].is_delete_marker:
                # Newer than a replicated version: written after the rule. Under a rule without delete
                # markers replication leaves it out, and so does the backfill.
                owners[i] = Owner.REPLICATION
    return plan


class Fix(enum.Enum):
    NONE = "none"
    COPY_CURRENT = "copy"  # a final copy of the source's current version
    DELETE_MARKER = "marker"  # a delete marker on top


def ours_on_top(replica_newest: Version | None, ours: frozenset[str] | set[str]) -> bool:
    """Whether the replica's newest entry is one of the backfill's copies (else replication's is on top)."""
    return replica_newest is not None and replica_newest.version_id in ours


def fix_needed(
    replica_newest: Version | None,
    ours: frozenset[str] | set[str],
    source_current: tuple[Version | None, str | None],
    *,
    delete_markers: bool,
    delivered: bool = False,
) -> Fix:
    """After a hot key's copies: does the replica's current need the final copy? (module docstring)"""
    if replica_newest is None or not ours_on_top(replica_newest, ours):
        return Fix.NONE  # nothing of ours on top: replication's (or a fix made before a crash) is
    current, status = source_current
    if current is None:  # the source's current is a delete marker
        if delete_markers and not replica_newest.is_delete_marker:
            return Fix.DELETE_MARKER
        return Fix.NONE
    # PENDING, yet a copy of it already below ours (`delivered`): S3 sets COMPLETED after writing the replica.
    return Fix.COPY_CURRENT if status == COMPLETED or (status == PENDING and delivered) else Fix.NONE


def _content(v: Version) -> tuple[bool, int, str]:
    return (v.is_delete_marker, v.size, v.etag)


@dataclass(slots=True)
class Pairing:
    """How verify pairs one key's histories when the source replicates (module docstring)."""

    replicated: list[tuple[Version, Version]]  # (source, replica) delivered by replication
    fix: Version | None  # the replica's final copy of the current version
    source_rest: list[Version]  # left for the ordinary comparison, oldest first
    replica_rest: list[Version]


def pair_replicated(
    source: Sequence[Version],
    replica: Sequence[Version],
    is_replica: Callable[[Version], bool],
    *,
    recorded_fix: str | None = None,
) -> Pairing:
    """Take out of both histories the versions replication delivered, and the final copy of the current.

    A replica version is replication's when it has a source version's ID (S3 keeps them) or when
    `is_replica` says so (its REPLICA status); it pairs with the same-ID source version, else with the
    newest unpaired source version of the same content (replication writes the newest versions).
    The fix is `recorded_fix` (the manifest's), or else the replica's newest entry when it is not
    replication's, equals the source's current version, and that current version was also delivered.
    """
    by_id = {v.version_id: v for v in source}
    taken: set[int] = set()  # indexes into source
    index = {id(v): i for i, v in enumerate(source)}
    replicated: list[tuple[Version, Version]] = []
    rest: list[Version] = []
    for r in replica:
        s = by_id.get(r.version_id)
        if s is not None and index[id(s)] not in taken:
            taken.add(index[id(s)])
            replicated.append((s, r))
            continue
        if not r.is_delete_marker and is_replica(r):
            for i in range(len(source) - 1, -1, -1):
                if i not in taken and _content(source[i]) == _content(r):
                    taken.add(i)
                    replicated.append((source[i], r))
                    break
            else:
                rest.append(r)  # a REPLICA of no source version: the ordinary comparison reports it
            continue
        rest.append(r)
    fix: Version | None = None
    if recorded_fix is not None:
        fix = next((r for r in rest if r.version_id == recorded_fix), None)
    elif (
        rest
        and source
        and rest[-1] is replica[-1]
        and (len(source) - 1) in taken
        and _content(rest[-1]) == _content(source[-1])
    ):
        fix = rest[-1]
    if fix is not None:
        rest = [r for r in rest if r is not fix]
    return Pairing(replicated, fix, [v for i, v in enumerate(source) if i not in taken], rest)


async def detect(
    src: Bucket, replica_bucket: str, src_prefix: str, dst_prefix: str, *, out: Any = None
) -> Scope | None:
    """The source's replication into `replica_bucket` that concerns this job, or None (module docstring)."""
    try:
        config = await src.replication()
    except AccessDenied as exc:
        print(
            f"warning: cannot read the source's replication configuration ({exc}); copying as if it did not "
            "replicate into the replica. If it does, grant s3:GetReplicationConfiguration "
            "(`backfill setup grant-backfill` does) and run again: versions replication delivers would be "
            "copied twice and a key's current version could end stale",
            file=out or sys.stderr,
            flush=True,
        )
        return None
    scope = scope_from(config, replica_bucket)
    if scope is None or not scope.covers(src_prefix):
        return None
    if src_prefix != dst_prefix:
        print(
            f"note: the source replicates into s3://{replica_bucket} under the same keys, while this job writes "
            f"them under another prefix ({dst_prefix!r} for {src_prefix!r}): its copies are left to it alone",
            file=out or sys.stderr,
            flush=True,
        )
        return None
    return scope
