"""An S3 Inventory report as the source of a run's key histories (`copy --inventory`).

The report is read with the source principal's client (S3 writes an inventory into a
bucket of the source's region). Its first pass (inventory.plan) checks every data file's
checksum and gives the shards — the key ranges of the data files, never splitting a key —
and a tally of what the job holds, so the estimate and the ETA know the total at start.
Each run reads the report again; the manifest keeps the shards and resume markers as for a
listing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from backfill.config import RunConfig
from backfill.errors import classify
from backfill.estimate import Tally
from backfill.inventory import Files, Plan, Row, check_report, key_pages, open_report, plan
from backfill.models import Shard, Version
from backfill.pipeline.costing import new_tally
from backfill.pipeline.sides import Sides


@dataclass(slots=True)
class InventorySource:
    plan: Plan
    files: Files
    tally: Tally  # what the report holds for this job (filters applied row by row)

    def shards(self) -> list[Shard]:
        return self.plan.shards()

    def pages(self, shard: Shard, after: str | None) -> AsyncIterator[tuple[list[list[Version]], bool]]:
        return key_pages(self.plan, self.files, shard, after)


async def open_inventory(cfg: RunConfig, sides: Sides) -> InventorySource:
    assert cfg.inventory is not None
    report, files = await open_report(
        cfg.inventory, client=await sides.src.botocore(), describe=lambda exc, what: classify(exc, what=what)
    )
    max_age = timedelta(seconds=cfg.inventory_max_age) if cfg.inventory_max_age is not None else None
    check_report(report, cfg.source.url.bucket, max_age=max_age)
    tally = new_tally(cfg, sides)
    prefix = cfg.source.url.prefix
    f = cfg.filters
    latest = cfg.options.versions == "latest"

    def on_row(r: Row) -> None:
        v = r.version
        if not f.key_selected(v.key[len(prefix) :]):
            return
        if f.modified_before is not None and datetime.fromisoformat(v.last_modified.replace("Z", "+00:00")) >= (
            f.modified_before
        ):
            return
        if latest and (not v.is_latest or v.is_delete_marker):
            return
        tally.add(v, source_kms=r.kms)

    p = await plan(report, files, prefix, on_row=on_row)
    return InventorySource(p, files, tally)
