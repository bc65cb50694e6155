"""`python -m benchmarks startup`: start-up and first copy, from exec, as the wire sees them.

A recording relay (in this process, on the server's CPU) stands between the tool and the
server (or the delay proxy, for RTT > 0). For every run it notes:

- *CPU to the first request*: the tool's CPU (user + system, every thread: the sum of
  /proc/PID/task/*/schedstat) at the moment its first request reaches the relay, and the
  wall time from exec to then;
- *first copy*: the wall time from exec until the answer to the first CopyObject goes
  back to the tool, and the requests sent before that copy;
- *first copy done, any*: the wall time from exec until the answer to any CopyObject
  goes back (with many copies in flight, the first sent need not be the first done).

The tool is pinned to CPU 1, the server, the proxy and the relay to CPU 0; each run
copies into a fresh versioned bucket and is stopped (SIGKILL) once its first copy has
been answered. backfill is compared with s5cmd, which starts in milliseconds.

With --warm, every run is made twice: into a fresh bucket, and into a fresh bucket that
had one object written before the run. SeaweedFS makes a collection for each bucket and
grows its volumes on the bucket's first write ("Each bucket will create one collection,
with at least 7 volumes by default", SeaweedFS wiki, S3 API FAQ): the first write into a
new bucket waits for that, 0.2-0.6 s here, whatever the tool. S3 has no such step, and a
replica that replication already writes to has had its first write long before.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from backfill.seaweed import local_s3
from benchmarks import report
from benchmarks.common import (
    CLIENT_CPU,
    OUT,
    SERVER_CPU,
    Shape,
    can_pin,
    compile_backfill,
    delay_proxy,
    ensure_seeded,
    git_commit,
    loadavg,
    make_bucket,
    measure,
    pinned,
    s3_client,
    wait_idle,
)
from benchmarks.peers import Target, available, s5cmd_binary

TOOLS = ("backfill", "s5cmd")


def log(msg: str) -> None:
    print(f"[startup] {msg}", file=sys.stderr, flush=True)


def process_cpu(pid: int) -> float:
    """CPU seconds of every live thread of `pid` (nanosecond schedstat), else its /proc stat (clock ticks)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        return total / 1e9
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


@dataclass
class Seen:
    """What the relay saw of one run."""

    pid: int = 0
    started: float = 0.0  # monotonic time just before exec
    first_request: float | None = None  # seconds from exec
    first_request_cpu: float | None = None
    requests: int = 0
    first_copy: float | None = None  # seconds from exec to the first CopyObject's answer
    copy_cpu: float | None = None  # the tool's CPU when it sent its first CopyObject
    copy_sent_at: float | None = None  # seconds from exec to the first CopyObject's request (None: not yet)
    any_copy: float | None = None  # seconds from exec to the first answer to any CopyObject
    timeline: list[str] = field(default_factory=list)  # "seconds-from-exec request-line", up to the first copy
    requests_before_copy: int = 0
    answered: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True)
class _Conn:
    """What one relayed connection carries (one request at a time: its next answer is that request's)."""

    first_copy: bool = False  # the run's first CopyObject went out on it
    a_copy: bool = False  # a CopyObject went out on it


class Relay:
    """A TCP relay that watches request heads go by (asyncio, in a thread of its own)."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").rstrip("/").partition(":")
        self.up_host, self.up_port = host, int(port or 80)
        self.seen = Seen()
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.up_host, self.up_port)
        except OSError:
            writer.close()
            return
        conn = _Conn()
        await asyncio.gather(
            self._pump(reader, up_writer, self._request, conn),
            self._pump(up_reader, writer, self._answer, conn),
            return_exceptions=True,
        )

    def _request(self, data: bytes, conn: _Conn) -> None:
        s = self.seen
        if s.first_request is None:
            s.first_request = time.monotonic() - s.started
            s.first_request_cpu = process_cpu(s.pid)
        s.requests += data.count(b" HTTP/1.1\r\n")
        if s.copy_sent_at is None:
            for line in data.split(b"\r\n"):
                if line.endswith(b" HTTP/1.1"):
                    s.timeline.append(f"{time.monotonic() - s.started:.3f} {line.decode('latin-1')[:120]}")
        if s.any_copy is not None or b"\r\nx-amz-copy-source:" not in data.lower():
            return  # once a copy was answered, the first one was sent too: nothing more to note
        conn.a_copy = True
        if s.copy_sent_at is None:
            s.copy_cpu = process_cpu(s.pid)
            s.copy_sent_at = time.monotonic() - s.started
            s.requests_before_copy = s.requests - 1
            conn.first_copy = True

    def _answer(self, data: bytes, conn: _Conn) -> None:
        s = self.seen
        if conn.a_copy and s.any_copy is None:
            s.any_copy = time.monotonic() - s.started
        if conn.first_copy and s.first_copy is None:
            s.first_copy = time.monotonic() - s.started
            s.answered.set()

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        note: Callable[[bytes, _Conn], None],
        state: _Conn,
    ) -> None:
        try:
            while data := await src.read(65536):
                note(data, state)
                dst.write(data)
                await dst.drain()
        finally:
            with contextlib.suppress(Exception):
                dst.close()


@dataclass
class Run:
    tool: str
    rtt_ms: float
    first_request: float | None
    first_request_cpu: float | None
    first_copy: float | None
    requests_before_copy: int
    copy_cpu: float | None = None
    copy_sent_at: float | None = None
    warm: bool = False  # the destination had one write before the run (see --warm)
    any_copy: float | None = None


@contextlib.contextmanager
def _upstream(endpoint: str, rtt: float, out: Path) -> Iterator[str]:
    if rtt <= 0:
        yield endpoint
        return
    with delay_proxy(endpoint, rtt, log=out / f"proxy-rtt{rtt:g}.log") as proxy:
        yield proxy.url


def one_run(relay: Relay, command: list[str], env: dict[str, str], log_to: Path, timeout: float) -> Seen:
    relay.seen = seen = Seen()
    with log_to.open("wb") as out, Path(f"{log_to}.err").open("wb") as err:
        seen.started = time.monotonic()
        proc = subprocess.Popen(pinned(command, CLIENT_CPU), env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        seen.pid = proc.pid
        try:
            seen.answered.wait(timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    Path(f"{log_to}.timeline").write_text("\n".join(seen.timeline) + "\n")
    return seen


def import_cpu(repeat: int, out: Path) -> float:
    """The CPU of `python -c 'import backfill.cli'` (the CLI's imports, Python's start-up included)."""
    cpus = []
    for i in range(repeat):
        m = measure(
            pinned([sys.executable, "-c", "import backfill.cli"], CLIENT_CPU), env=dict(os.environ), log=out / f"imp{i}"
        )
        cpus.append(m.cpu)
    return statistics.median(cpus)


def main(args: argparse.Namespace) -> None:
    compile_backfill()
    if can_pin():
        os.sched_setaffinity(0, {SERVER_CPU})  # the relay's thread runs beside the server
    rtts = [float(x) for x in args.rtt_ms.split(",")]
    names = args.tools.split(",")
    tools = available(names, log)
    out_dir = OUT / f"startup-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = Shape(args.objects, 1)
    load_before = loadavg()
    runs: list[Run] = []
    data_dir = Path(args.data_dir) if args.data_dir else out_dir / "seaweed"
    with local_s3(data_dir, cpu=SERVER_CPU if can_pin() else None) as s3:
        client = s3_client(s3.endpoint_url, s3.access_key, s3.secret_key)
        src = f"bench-src-{shape.objects}-{shape.versions}"
        ensure_seeded(client, s3.endpoint_url, s3.env(), src, shape, data_dir, s5cmd_binary())
        n = 0
        for rtt in rtts:
            with _upstream(s3.endpoint_url, rtt, out_dir) as upstream, Relay(upstream) as relay:
                for rep in range(args.repeat):
                    for tool, warm in itertools.product(tools.values(), (False, True) if args.warm else (False,)):
                        n += 1
                        dst = f"bench-start-{os.getpid()}-{n}"
                        make_bucket(client, dst)
                        if warm:  # outside the source's keys: no tool copies onto it
                            client.put_object(Bucket=dst, Key="warm-up/object", Body=b"written before the run")
                        wait_idle(s3.pid)
                        work = out_dir / f"{n:03d}-{tool.name}-rtt{rtt:g}{'-warm' if warm else ''}"
                        work.mkdir()
                        target = Target(relay.url, s3.access_key, s3.secret_key, src, dst, work)
                        seen = one_run(relay, tool.command(target), tool.env(target), work / "out", args.timeout)
                        r = Run(
                            tool.name,
                            rtt,
                            seen.first_request,
                            seen.first_request_cpu,
                            seen.first_copy,
                            seen.requests_before_copy,
                            seen.copy_cpu,
                            seen.copy_sent_at,
                            warm,
                            seen.any_copy,
                        )
                        runs.append(r)
                        log(
                            f"rtt {rtt:g} ms, run {rep + 1}, {tool.name}{' (warm)' if warm else ''}: "
                            f"first request at {_s(r.first_request)} "
                            f"(CPU {_s(r.first_request_cpu)}), first copy at {_s(r.first_copy)} "
                            f"(any done at {_s(r.any_copy)}) "
                            f"after {r.requests_before_copy} requests (CPU {_s(r.copy_cpu)})"
                        )
                        client.delete_bucket(Bucket=dst)
    imports = import_cpu(args.repeat * 2 + 1, out_dir) if "backfill" in tools else None
    section = _section(args, runs, tools, imports, (load_before, loadavg()))
    print(section)
    if args.record:
        report.append_results(section)
        log("appended to benchmarks/RESULTS.md")


def _s(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f} s"


def _median(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def _section(
    args: argparse.Namespace,
    runs: list[Run],
    tools: Mapping[str, object],
    imports: float | None,
    load: tuple[str, str],
) -> str:
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    command = shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]])
    lines = [
        f"## Start-up and first copy ({date})",
        "",
        *([f"*{args.note}*", ""] if args.note else []),
        report.machine_line(can_pin(), load).replace("delay proxy (testbed/proxy.py)", "delay proxy and the relay"),
        "",
        f"Command: `{command}` (backfill {git_commit()})",
        "",
        f"Source: {args.objects:,} keys × 1 version of 1 KiB (16 prefixes). {__doc__.split(chr(10) + chr(10), 1)[1]}"
        f"Medians of {args.repeat} runs.",
        "",
        "| RTT ms | tool | destination | CPU to the first request s | wall to the first request s "
        "| first copy sent s | first copy s (from exec) | first copy done, any s | requests before the first copy "
        "| CPU to the first copy s | runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rtt, name, warm in itertools.product(sorted({r.rtt_ms for r in runs}), tools, (False, True)):
        rs = [r for r in runs if r.rtt_ms == rtt and r.tool == name and r.warm == warm]
        if not rs:
            continue
        ok = [r for r in rs if r.first_copy is not None]
        before = statistics.median(r.requests_before_copy for r in ok) if ok else 0
        lines.append(
            f"| {rtt:g} | {name} | {_WARM[warm]} | {_f(_median([r.first_request_cpu for r in rs]))} "
            f"| {_f(_median([r.first_request for r in rs]))} | {_f(_median([r.copy_sent_at for r in rs]))} "
            f"| {_f(_median([r.first_copy for r in rs]))} | {_f(_median([r.any_copy for r in rs]))} "
            f"| {before:g} | {_f(_median([r.copy_cpu for r in rs]))} | {len(ok)}/{len(rs)} |"
        )
    if imports is not None:
        lines += [
            "",
            f"`python -c 'import backfill.cli'` (Python's start-up and the CLI's imports): {imports:.3f} s CPU.",
        ]
    lines += ["", "Targets (issue 17):"]
    bf = [r for r in runs if r.tool == "backfill"]
    cpu = _median([r.first_request_cpu for r in bf])
    if cpu is not None:
        lines.append(
            f"- start-up ≤ 0.35 s of CPU to the first request: {cpu:.3f} s — " + ("met" if cpu <= 0.35 else "missed")
        )
    for (rtt, limit), warm in itertools.product(((0.0, 1.0), (50.0, 1.2)), (False, True)):
        first = _median([r.first_copy for r in bf if r.rtt_ms == rtt and r.warm == warm])
        if first is not None:
            lines.append(
                f"- first copy ≤ {limit:g} s at {rtt:g} ms RTT (from exec), {_WARM[warm]}: {first:.3f} s — "
                + ("met" if first <= limit else "missed")
            )
    return "\n".join(lines) + "\n"


_WARM = {False: "fresh bucket", True: "bucket written before"}


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--objects", type=int, default=10_000, help="keys in the source (default 10,000)")
    ap.add_argument("--rtt-ms", default="0,50", help="round-trip times, comma-separated (default 0,50)")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated: backfill, s5cmd")
    ap.add_argument("--repeat", type=int, default=5, help="runs per tool and RTT (default 5)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds a run may take to its first copy")
    ap.add_argument("--data-dir", help="SeaweedFS data directory to keep and reuse (e.g. the peers run's)")
    ap.add_argument("--no-record", dest="record", action="store_false", help="print the table only")
    ap.add_argument(
        "--warm",
        action="store_true",
        help="also run each tool into a bucket that had one write before (SeaweedFS grows a new bucket's volumes then)",
    )
    ap.add_argument("--note", default="", help="a sentence for RESULTS.md about this run")
