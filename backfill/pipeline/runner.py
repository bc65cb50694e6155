"""One run of `backfill copy` on this machine: open both sides, open the manifest, run the engine."""

from __future__ import annotations

import sys
from typing import Any

from backfill.config import RunConfig
from backfill.manifest import Manifest
from backfill.pipeline.run import RunResult, run_pipeline
from backfill.pipeline.sides import open_sides
from backfill.progress import Counters


async def run_copy(cfg: RunConfig, *, log: Any = None) -> RunResult:
    """Run (or resume) a backfill. Raises UserError for anything the user must fix."""
    out = log or sys.stderr
    counters = Counters()
    async with open_sides(cfg) as sides:
        manifest: Manifest | None = None
        if not cfg.dry_run:
            manifest = Manifest.open(cfg.manifest, cfg.job_identity(), create=True)
        try:
            result = await run_pipeline(cfg, sides, manifest, counters, out=out)
        finally:
            if manifest is not None:
                manifest.close()
        result.pacing = sides.pacing()
        return result
