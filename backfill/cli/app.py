"""The `backfill` command: the typer app, assembled from the commands of this package (and nothing else)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from backfill import __version__
from backfill.cli.copy import copy
from backfill.cli.demo import demo
from backfill.cli.setup import setup_app
from backfill.cli.shards import run_shards
from backfill.cli.status import status
from backfill.cli.verify import verify

app = typer.Typer(
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show s3://BUCKET[/PREFIX], not rich markup
    help="Backfill an S3 bucket, with every version, into a replica bucket: sharded, server-side, resumable.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"backfill {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Backfill an S3 bucket, with every version, into a replica bucket: sharded, server-side, resumable."""


app.command()(copy)
app.command()(verify)
app.command()(status)
app.command()(demo)
app.command("run-shards")(run_shards)
app.add_typer(setup_app, name="setup")


def main() -> None:
    # botocore logs a failed credential refresh as a warning with its traceback; with no handler
    # configured, Python's last-resort handler would print it. The run reports it in one line
    # (errors.credentials_expired) instead.
    for name in ("botocore", "aiobotocore"):
        logging.getLogger(name).addHandler(logging.NullHandler())
    app()
