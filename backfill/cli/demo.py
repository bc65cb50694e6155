"""`backfill demo`: a local SeaweedFS, a versioned demo bucket, setup plan → copy → status → verify."""

from __future__ import annotations

from typing import Annotated

import typer

from backfill.cli.guard import guard


def demo(
    objects: Annotated[int, typer.Option(help="How many keys the demo bucket gets.")] = 2000,
) -> None:
    """Start a local SeaweedFS, fill a versioned demo bucket, back it up, and show the result."""
    from backfill.demo import run_demo  # the demo's seeding client is only imported when it runs

    raise typer.Exit(guard(lambda: run_demo(objects)))
