"""`python -m benchmarks run …` (backfill beside its peers); `… scale …` (10k vs 200k); `… startup …`."""

from __future__ import annotations

import argparse

from benchmarks import run, scale, startup


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
    args = ap.parse_args()
    if args.command == "run":
        run.main(args)
    elif args.command == "startup":
        startup.main(args)
    else:
        scale.main(args)


if __name__ == "__main__":
    main()
