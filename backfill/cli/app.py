"""The `backfill` command: the typer app, assembled from the commands of this package (and nothing else)."""

from __future__ import annotations

import typer

from backfill.cli.copy import copy
from backfill.cli.demo import demo
from backfill.cli.setup import setup_app
from backfill.cli.shards import run_shards
from backfill.cli.status import status
from backfill.cli.verify import verify

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show s3://BUCKET[/PREFIX], not rich markup
    help="Backfill an S3 bucket, with every version, into a replica bucket: sharded, server-side, resumable.",
)
app.command()(copy)
app.command()(verify)
app.command()(status)
app.command()(demo)
app.command("run-shards")(run_shards)
app.add_typer(setup_app, name="setup")


def main() -> None:
    app()
