"""`python -m benchmarks run …` (backfill beside its peers); `… scale …` (two sizes); `… startup …`; `… longkey …`."""

from __future__ import annotations

import argparse
import sys

from benchmarks import longkey, run, scale, startup


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="backfill, s5cmd, aws s3 sync and rclone side by side", description=run.__doc__)
    run.add_arguments(r)
    s = sub.add_parser(
        "scale", help="backfill at two sizes: memory, first copy, manifest, listing", description=scale.__doc__
    )
    scale.add_arguments(s)
    u = sub.add_parser(
        "startup", help="start-up CPU and first copy, from exec, seen on the wire", description=startup.__doc__
    )
    startup.add_arguments(u)
    sub.add_parser("longkey", help="one key with a long history: memory while it is listed and copied", add_help=False)
    if len(sys.argv) > 1 and sys.argv[1] == "longkey":
        longkey.main(sys.argv[2:])
        return
    args = ap.parse_args()
    if args.command == "run":
        run.main(args)
    elif args.command == "startup":
        startup.main(args)
    else:
        scale.main(args)


if __name__ == "__main__":
    main()
