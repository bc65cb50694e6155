"""One run of `backfill copy` on this machine: open both sides, open the manifest, run the engine."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from backfill.config import RunConfig
from backfill.manifest import Manifest
from backfill.pipeline.run import RunResult, run_pipeline
from backfill.pipeline.sides import open_sides
from backfill.progress import Counters


async def run_copy(cfg: RunConfig, *, log: Any = None) -> RunResult:
    """Run (or resume) a backfill. Raises UserError for anything the user must fix."""
    out = log or sys.stderr
    counters = Counters()
    async with open_sides(cfg, discover_shards=True) as sides:
        manifest: Manifest | None = None
        with tempfile.TemporaryDirectory(prefix="backfill-dry-") as scratch:
            if not cfg.dry_run:
                manifest = Manifest.open(cfg.manifest, cfg.job_identity(), create=True)
            elif await anyio.Path(cfg.manifest).exists():
                # A dry run of a job begun before estimates what is left: it runs on a scratch copy of
                # the manifest (resume markers, unfinished versions), and the manifest stays untouched.
                live = Manifest.open(cfg.manifest, cfg.job_identity(), create=False)
                try:
                    live.snapshot_to(Path(scratch) / "manifest.db")
                finally:
                    live.close()
                manifest = Manifest.open(str(Path(scratch) / "manifest.db"), cfg.job_identity(), create=False)
            try:
                result = await run_pipeline(cfg, sides, manifest, counters, out=out)
            finally:
                if manifest is not None:
                    manifest.close()
        if cfg.dry_run:
            result.manifest = ""
        result.pacing = sides.pacing()
        return result
