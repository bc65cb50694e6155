"""The job plan in a state location (job.json): what is copied, and the shard list.

Written once, with a conditional create: of several planners racing (pods of an
Indexed Job, a driver started twice), one plan wins and the others adopt it, so
every worker sees the same shards. A plan of another job is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backfill.config import CopyOptions, Filters, RunConfig, Side, parse_time
from backfill.distributed.store import JOB, Conflict, Store, check_conditional_writes
from backfill.errors import UserError
from backfill.models import Shard
from backfill.pipeline.shards import discover
from backfill.s3 import Bucket

FORMAT = 1
SHARDS_PER_WORKER = 12  # many more shards than workers: a large prefix does not leave a straggler


@dataclass(frozen=True, slots=True)
class JobPlan:
    identity: dict[str, str]
    options: CopyOptions
    filters: Filters
    created: str  # ISO time, before any copy of the job: the reconcile's lower bound
    shards: tuple[Shard, ...]

    @property
    def source(self) -> str:
        return self.identity["source"]

    @property
    def dest(self) -> str:
        return self.identity["dest"]

    def dump(self) -> bytes:
        o, f = self.options, self.filters
        doc: dict[str, Any] = {
            "format": FORMAT,
            "identity": self.identity,
            "created": self.created,
            "options": {
                "versions": o.versions,
                "multipart_threshold": o.multipart_threshold,
                "part_size": o.part_size,
                "acl": o.acl,
                "sse_kms_key_id": o.sse_kms_key_id,
            },
            "filters": {
                "include": list(f.include),
                "exclude": list(f.exclude),
                "modified_before": f.modified_before.isoformat() if f.modified_before else None,
            },
            "shards": [[s.id, s.prefix, s.after, s.upto] for s in self.shards],
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def load(cls, body: bytes, where: str) -> JobPlan:
        try:
            doc = json.loads(body)
            if doc.get("format") != FORMAT:
                raise UserError(f"{where}: plan format {doc.get('format')!r}; this backfill reads format {FORMAT}")
            o, f = doc["options"], doc["filters"]
            return cls(
                identity={str(k): str(v) for k, v in doc["identity"].items()},
                options=CopyOptions(
                    versions="latest" if o["versions"] == "latest" else "all",
                    multipart_threshold=int(o["multipart_threshold"]),
                    part_size=int(o["part_size"]),
                    acl=o["acl"],
                    sse_kms_key_id=o["sse_kms_key_id"],
                ),
                filters=Filters(
                    tuple(f["include"]),
                    tuple(f["exclude"]),
                    parse_time(f["modified_before"]) if f["modified_before"] else None,
                ),
                created=str(doc["created"]),
                shards=tuple(Shard(int(i), str(p), a, u) for i, p, a, u in doc["shards"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{where} is not a backfill job plan ({exc}): pass another --state") from None

    def run_config(self, source: Side, dest: Side, **tuning: Any) -> RunConfig:
        """The RunConfig of this job, reached through these sides (profiles, regions, endpoints)."""
        return RunConfig(
            source=source,
            dest=dest,
            manifest="",
            options=self.options,
            filters=self.filters,
            **tuning,
        ).validate()


async def load_plan(store: Store) -> JobPlan | None:
    got = await store.get(JOB)
    return None if got is None else JobPlan.load(got[0], f"{store.url.rstrip('/')}/{JOB}")


def check_identity(plan: JobPlan, cfg: RunConfig, where: str) -> None:
    want = cfg.job_identity()
    diff = [k for k in sorted(want) if plan.identity.get(k, "") != want[k]]
    if diff:
        have = ", ".join(f"{k}={plan.identity.get(k, '')!r}" for k in diff)
        this = ", ".join(f"{k}={want[k]!r}" for k in diff)
        raise UserError(
            f"the state at {where} belongs to another job ({have}; this run has {this}): "
            "pass a different --state, or rerun with that job's arguments"
        )


async def make_plan(store: Store, cfg: RunConfig, src: Bucket, target: int) -> tuple[JobPlan, bool]:
    """The job's plan: the one in the store, or a new one (shards discovered now). (plan, created)."""
    existing = await load_plan(store)
    if existing is not None:
        check_identity(existing, cfg, store.url)
        return existing, False
    await check_conditional_writes(store)
    shards = await discover(src, cfg.source.url.prefix, target)
    plan = JobPlan(
        identity=cfg.job_identity(),
        options=cfg.options,
        filters=cfg.filters,
        created=datetime.now(UTC).isoformat(),
        shards=tuple(shards),
    )
    try:
        await store.put(JOB, plan.dump(), create=True)
    except Conflict:
        won = await load_plan(store)  # another planner was first: its shards are the job's
        assert won is not None
        check_identity(won, cfg, store.url)
        return won, False
    return plan, True


def first_run_started(plan: JobPlan) -> datetime:
    return datetime.fromisoformat(plan.created)
