"""The `backfill` command's entry point, kept free of heavy imports.

Importing the CLI (botocore, aiohttp, …) takes a few tenths of a second; a
Ctrl-C in that window must stop as quietly as one later does, not with a
traceback through the import machinery.
"""

from __future__ import annotations

import sys

from backfill.interrupts import watching


def main() -> None:
    try:
        with watching():
            from backfill.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("\nstopped before anything started: nothing was read or written\n")
        raise SystemExit(130) from None
    try:
        cli_main()
    except KeyboardInterrupt:
        # Only typer's building of the commands lets one through: within a command typer turns it into
        # exit 130, and a run watches for signals itself (cli.guard.before_anything, pipeline.stopping).
        sys.stderr.write("\nstopped before anything started: nothing was read or written\n")
        raise SystemExit(130) from None
