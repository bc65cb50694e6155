"""One view of a multi-shard job: every shard's checkpoint, merged into one manifest file (status, verify)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio

from backfill.distributed.store import StateAccess, Store, lease_name, open_store
from backfill.errors import UserError
from backfill.manifest import Manifest
from backfill.models import Shard

from .lease import Lease
from .plan import JobPlan, load_plan


async def merge(state: str, access: StateAccess, target: Path) -> JobPlan:
    """All shard checkpoints of a job, as one manifest file at `target`."""
    async with open_store(state, access) as store:
        plan = await load_plan(store)
        if plan is None:
            raise UserError(f"no backfill job at {state} (no job.json): pass the --state the copy used")
        await anyio.to_thread.run_sync(_create_merged, plan, target)
        with tempfile.TemporaryDirectory(prefix="backfill-merge-") as tmp:
            for s in plan.shards:
                await _merge_one(store, s, target, Path(tmp) / f"{s.id}.db")
    return plan


def _create_merged(plan: JobPlan, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    m = Manifest.open(str(target), plan.identity, create=True)
    m.set_first_run_started(plan.created)
    m.close()


async def _merge_one(store: Store, s: Shard, target: Path, tmp: Path) -> None:
    """The shard's checkpoint (the one its lease names), or the bare shard when none was uploaded yet."""
    got = await store.get(lease_name(s.id))
    lease = Lease.load(got[0]) if got is not None else None
    have = bool(lease and lease.checkpoint and await store.download(lease.checkpoint, tmp))
    await anyio.to_thread.run_sync(_append, target, s, tmp if have else None)


def _append(target: Path, s: Shard, shard_file: Path | None) -> None:
    m = Manifest.open(str(target), None, create=False)
    try:
        if shard_file is None:
            m.save_shards([s])
        else:
            m.merge_from(shard_file)
    finally:
        m.close()
