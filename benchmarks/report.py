"""RESULTS.md sections (appended, dated; the history stays) and the PNG charts."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import ROOT, machine, seaweed_version

if TYPE_CHECKING:
    from benchmarks.common import Shape
    from benchmarks.peers import Tool
    from benchmarks.run import RunResult, Summary
    from benchmarks.scale import ScaleResult

RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def machine_line(pinned: bool, load: tuple[str, str], *, proxy: bool = True) -> str:
    m = machine()
    weed = f"SeaweedFS {seaweed_version()} (`weed mini`)"
    server = f"{weed} and the delay proxy (testbed/proxy.py)" if proxy else weed
    pin = (
        f"{server} pinned to CPU 0, the client pinned to CPU 1 (`taskset`)"
        if pinned
        else "NOT pinned (no taskset or a single CPU): server and client share the CPUs"
    )
    return (
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['ram']} RAM, {m['os']}, Python {m['python']}. {pin}. "
        f"Load average (1, 5, 15 min) before: {load[0]}; after: {load[1]}."
    )


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def peers_section(
    *,
    shape: Shape,
    summaries: Sequence[Summary],
    tools: Sequence[Tool],
    command: str,
    repeat: int,
    pinned: bool,
    load: tuple[str, str],
    failures: Sequence[RunResult],
    proxies: Sequence[str] = (),
    note: str = "",
) -> str:
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    lines = [
        f"## Peers side by side: {shape.objects:,} keys × {shape.versions} ({date})",
        "",
        *([f"*{note}*", ""] if note else []),
        machine_line(pinned, load),
        "",
        f"Command: `{command}`",
        "",
        f"Source: {shape.describe()}. Each run copies into a fresh, versioned bucket and counts only if the "
        "check passes (every expected key with the source's ETag, a sample of contents, and for a complete "
        f"copy every key's history). Each run starts once the server is idle (SeaweedFS reclaims the previous "
        f"run's bucket in the background). Medians of {repeat} interleaved runs (tools in turn, repeated). Client "
        "CPU and peak RSS are the tool process's own and its waited-for children's (os.wait4), start-up included; "
        "*fixed CPU* is the same command's CPU on an empty source (start-up, set-up), "
        "*marginal* is (CPU − fixed) per copy.",
        "",
        "| RTT ms | tool | copies | wall s (min–max) | copies/s | client CPU s | CPU ms/copy "
        "| fixed CPU s | marginal CPU ms/copy | peak RSS MiB | runs ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        if not s.runs:
            lines.append(f"| {s.rtt_ms:g} | {s.tool} | – | failed | | | | | | | 0/{s.failed} |")
            continue
        lines.append(
            f"| {s.rtt_ms:g} | {s.tool} | {s.copies:,} | {s.wall:.2f} ({s.wall_range[0]:.2f}–{s.wall_range[1]:.2f}) "
            f"| {s.per_second:,.0f} | {s.cpu:.2f} | {s.cpu_ms_per_copy:.3f} | {_fmt(s.fixed_cpu)} "
            f"| {_fmt(s.marginal_cpu_ms, 3)} | {s.max_rss_mib:.0f} | {s.runs}/{s.runs + s.failed} |"
        )
    lines += ["", "Tools:"]
    lines += [f"- {t.name}: {t.version}; `{t.shown}`" for t in tools]
    lines += ["- peers (s5cmd, aws, rclone) copy current objects only; so does `backfill --versions latest`."]
    lines += [f"- {p}." for p in proxies]
    if shape.versions > 1:
        complete = [t.name for t in tools if t.complete]
        lines.append(
            f"- only {', '.join(complete) or 'backfill-all (not run)'} copies the whole history "
            f"({shape.history_entries:,} versions and delete markers); the others leave "
            f"{shape.history_entries - shape.current_objects:,} of them behind."
        )
    if failures:
        lines += ["", "Runs that did not count:"]
        lines += [f"- {r.tool}, RTT {r.rtt_ms:g} ms, run {r.repeat + 1}: {r.note}" for r in failures]
    lines += ["", *targets(summaries, shape)]
    return "\n".join(lines) + "\n"


def targets(summaries: Sequence[Summary], shape: Shape) -> list[str]:
    """Issue 17's targets (and issue 5's comparison with aws s3 sync), as far as this run can say."""
    by = {(s.rtt_ms, s.tool): s for s in summaries if s.runs}
    out = ["Targets (issue 17; defined for 10,000 objects):" if shape.objects != 10_000 else "Targets (issue 17):"]
    bf0, s50 = by.get((0.0, "backfill")), by.get((0.0, "s5cmd"))
    if bf0 is not None and s50 is not None and s50.cpu:
        ratio = bf0.cpu / s50.cpu
        out.append(
            f"- client CPU ≤ 0.45 × s5cmd's (whole process, 0 ms RTT): {bf0.cpu:.2f} s vs {s50.cpu:.2f} s = "
            f"{ratio:.2f}× ({bf0.cpu_ms_per_copy:.3f} vs {s50.cpu_ms_per_copy:.3f} ms per copy) — "
            + ("met" if ratio <= 0.45 else "missed")
        )
    for rtt, factor in ((0.0, 1.05), (20.0, 1.0), (50.0, 1.0)):
        bf, s5 = by.get((rtt, "backfill")), by.get((rtt, "s5cmd"))
        if bf and s5:
            ratio = bf.wall / s5.wall
            out.append(
                f"- wall ≤ {factor:g} × s5cmd's at {rtt:g} ms RTT: {bf.wall:.2f} s vs {s5.wall:.2f} s = {ratio:.2f}× — "
                + ("met" if ratio <= factor else "missed")
            )
    for rtt in sorted({s.rtt_ms for s in summaries}):
        pairs = [(a, b) for a, b in (("backfill", "s5cmd"), ("backfill-1024", "s5cmd-1024")) if (rtt, a) in by]
        for a, b in pairs:
            if rtt >= 100 and (rtt, b) in by:
                out.append(
                    f"- at {rtt:g} ms RTT (cross-region), {a} vs {b}: {by[(rtt, a)].wall:.2f} s vs "
                    f"{by[(rtt, b)].wall:.2f} s (no target; the issue asks for the column)"
                )
    for rtt in sorted({s.rtt_ms for s in summaries}):
        bf, aws = by.get((rtt, "backfill")), by.get((rtt, "aws"))
        if bf and aws:
            out.append(f"- faster than aws s3 sync at {rtt:g} ms RTT (issue 5 asked ≥ 4×): {aws.wall / bf.wall:.1f}×")
    if len(out) == 1:
        out.append("- (needs backfill with s5cmd or aws in the same run)")
    return out


def scale_section(
    *,
    results: Sequence[ScaleResult],
    versions_per_key: int,
    command: str,
    version: str,
    pinned: bool,
    load: tuple[str, str],
    base_cpu: float,
    note: str = "",
) -> str:
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    sizes = " vs ".join(f"{r.versions:,}" for r in results)
    lines = [
        f"## Scale: {sizes} versions ({date})",
        "",
        *([f"*{note}*", ""] if note else []),
        machine_line(pinned, load, proxy=False),
        "",
        f"Command: `{command}` ({version})",
        "",
        f"Sources of {versions_per_key} versions per key, 1 KiB each, 16 prefixes. *Listing* is "
        "`backfill copy --dry-run --versions all` (shard discovery and listing; no copy, no manifest): "
        f"its CPU minus the same command's on an empty bucket ({base_cpu:.2f} s: Python start-up, set-up), "
        "per version (median of 3; at a small size the fixed cost of shard discovery weighs on it, so the "
        "target below is checked between the two sizes). *Copy* is `backfill copy --versions all` into a "
        "fresh bucket, checked by "
        "counting the replica's versions; CPU and peak RSS are the process's own (os.wait4). *First copy* is "
        "as backfill reports it, from the start of its run (after Python's start-up). `backfill copy` has no "
        "switch that turns the manifest off, so *checkpoint* is backfill's Checkpoint writer measured alone "
        "(`python -m benchmarks.checkpoint`), fed the same number of versions at the copy's own rate, and "
        "given as a share of the copy's CPU.",
        "",
        "| versions | dry-run CPU s | listing CPU µs/version | copy wall s | versions/s | client CPU ms/copy "
        "| peak RSS MiB | first copy s | manifest B/version | checkpoint CPU µs/version (share) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cp = (
            "–"
            if r.checkpoint_us_per_version is None or r.checkpoint_share is None
            else f"{r.checkpoint_us_per_version:.1f} ({r.checkpoint_share:.0%})"
        )
        lines.append(
            f"| {r.versions:,} | {r.listing_cpu:.2f} | {r.listing_us_per_version:.1f} | {r.copy_wall:.1f} "
            f"| {r.copies / r.copy_wall:,.0f} | {r.cpu_ms_per_copy:.3f} | {r.peak_rss_mib:.1f} "
            f"| {_fmt(r.first_copy_seconds)} | {r.manifest_bytes_per_version:.0f} | {cp} |"
        )
    lines += ["", "Targets (issue 5):"]
    if len(results) >= 2:
        small, large = results[0], results[-1]
        growth = (large.peak_rss_mib - small.peak_rss_mib) * 1.048576
        lines.append(
            f"- peak RSS at {large.versions:,} ≤ RSS at {small.versions:,} + 20 MB: +{growth:.1f} MB — "
            + ("met" if growth <= 20 else "missed")
        )
    worst_first = max((r.first_copy_seconds or 0.0) for r in results)
    lines.append(f"- first copy < 2 s: at most {worst_first:.2f} s — " + ("met" if worst_first < 2 else "missed"))
    worst_manifest = max(r.manifest_bytes_per_version for r in results)
    lines.append(
        f"- manifest ≤ 200 bytes per version: at most {worst_manifest:.0f} — "
        + ("met" if worst_manifest <= 200 else "missed")
    )
    if len(results) >= 2 and results[-1].versions > results[0].versions:
        # Between two sizes the fixed costs (start-up, shard discovery) cancel out.
        small, large = results[0], results[-1]
        listing = (large.listing_cpu - small.listing_cpu) * 1e6 / (large.versions - small.versions)
        how = (
            f"{listing:.1f} µs (dry-run CPU from {small.versions:,} to {large.versions:,} versions, per added version)"
        )
    else:
        listing = max(r.listing_us_per_version for r in results)
        how = f"at most {listing:.1f} µs"
    lines.append(
        f"- listing ≤ 15 µs CPU per version: {how} — " + ("met" if listing <= 15 else f"missed by {listing / 15:.1f}×")
    )
    shares = [r.checkpoint_share for r in results if r.checkpoint_share is not None]
    if shares:
        lines.append(
            f"- checkpointing < 5% of throughput (as a share of the client's CPU, which bounds it): at most "
            f"{max(shares):.1%} — " + ("met" if max(shares) < 0.05 else "missed")
        )
    return "\n".join(lines) + "\n"


def append_results(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    RESULTS.write_text(text.rstrip("\n") + "\n\n" + section)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def peers_chart(summaries: Sequence[Summary], shape: Shape, path: Path) -> bool:
    """Grouped bars: wall time, client CPU per copy and peak RSS per tool, one group per RTT."""
    plt = _pyplot()
    if plt is None:
        return False
    ok = [s for s in summaries if s.runs]
    tools = list(dict.fromkeys(s.tool for s in ok))
    rtts = sorted({s.rtt_ms for s in ok})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    width = 0.8 / max(1, len(rtts))
    metrics: tuple[tuple[str, Callable[[Summary], float]], ...] = (
        ("wall seconds (lower is better)", lambda s: s.wall),
        ("client CPU ms per copy", lambda s: s.cpu_ms_per_copy),
        ("peak RSS MiB", lambda s: s.max_rss_mib),
    )
    for ax, (title, value) in zip(axes, metrics, strict=True):
        for j, rtt in enumerate(rtts):
            xs, ys = [], []
            for i, tool in enumerate(tools):
                s = next((x for x in ok if x.tool == tool and x.rtt_ms == rtt), None)
                if s is not None:
                    xs.append(i + (j - (len(rtts) - 1) / 2) * width)
                    ys.append(value(s))
            bars = ax.bar(xs, ys, width, label=f"RTT {rtt:g} ms")
            ax.bar_label(bars, fmt="%.2f" if "ms" in title or "wall" in title else "%.0f", fontsize=7)
        ax.set_title(title)
        ax.set_xticks(range(len(tools)))
        ax.set_xticklabels(tools, rotation=20)
    axes[0].legend()
    what = f"{shape.objects:,} keys × {shape.versions} version{'s' if shape.versions > 1 else ''}, 1 KiB"
    fig.suptitle(f"{what}, on a local SeaweedFS — medians — {time.strftime('%Y-%m-%d')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
