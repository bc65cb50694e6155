"""`backfill setup …`: the typer sub-app. Options → SetupConfig → setup.run → exit code.

Exit codes: 0 done (check: healthy); 1 check found drift, or apply was not confirmed;
2 a usage, credential, permission or ownership error (one line, no traceback).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import typer

from backfill.cli.guard import fail, guard
from backfill.cli.options import group, options
from backfill.errors import UserError

# backfill.setup (its documents, steps and SDK calls) is imported when a setup command runs, not at every
# start of the CLI: a copy never uses it.
if TYPE_CHECKING:
    from backfill.setup.model import SetupConfig


def _run_module() -> ModuleType:
    from backfill.setup import run

    return run


setup_app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show s3://BUCKET[/PREFIX], not rich markup
    help="Set up cross-account, cross-region replication of a bucket (plan, apply, check), the read grant "
    "for a backfill, and an alert when replication is removed or weakened.",
)

Source = Annotated[str, typer.Option("--source", help="s3://BUCKET to replicate.", show_default=False)]
SourceAccount = Annotated[str, typer.Option("--source-account", help="Its AWS account ID.", show_default=False)]
SourceRegion = Annotated[str, typer.Option("--source-region", help="Its region.", show_default=False)]
SourceProfile = Annotated[
    str | None,
    typer.Option("--source-profile", help="AWS profile of the source account (default: the AWS CLI's default chain)."),
]
Replica = Annotated[str, typer.Option("--replica", help="s3://BUCKET that receives the replicas.", show_default=False)]
ReplicaAccount = Annotated[str, typer.Option("--replica-account", help="Its AWS account ID.", show_default=False)]
ReplicaRegion = Annotated[str, typer.Option("--replica-region", help="Its region.", show_default=False)]
ReplicaProfile = Annotated[
    str | None,
    typer.Option(
        "--replica-profile", help="AWS profile of the replica account (default: the AWS CLI's default chain)."
    ),
]
BackfillPrincipal = Annotated[
    str | None,
    typer.Option(
        "--backfill-principal",
        help="Who grant-backfill lets read the source: an IAM ARN in the replica account "
        "(default: the whole replica account, arn:aws:iam::REPLICA-ACCOUNT:root).",
        show_default=False,
    ),
]
MfaDelete = Annotated[
    str | None,
    typer.Option(
        "--mfa-delete",
        help="Also enable MFA Delete on the source or the replica bucket. Only the root user of that bucket's "
        "account can, with its MFA device: apply then needs that side's profile to be the root user's, and --mfa.",
        show_default=False,
    ),
]
SourceKmsKey = Annotated[
    str | None,
    typer.Option(
        "--source-kms-key",
        help="ARN of the customer managed KMS key of the source's SSE-KMS objects: the rule then replicates them "
        "(with --replica-kms-key), the role may decrypt with exactly this key, and plan writes the statements its "
        "key policy needs.",
        show_default=False,
    ),
]
ReplicaKmsKey = Annotated[
    str | None,
    typer.Option(
        "--replica-kms-key",
        help="ARN of the KMS key, in the replica's account and region, that replicas are encrypted with "
        "(ReplicaKmsKeyID); the role may encrypt with exactly this key.",
        show_default=False,
    ),
]
Out = Annotated[str | None, typer.Option("--out", help="Write every JSON document into this directory.")]


@group
@dataclass(frozen=True, slots=True)
class Pair:
    """The source and replica of a set-up: the options every setup command takes."""

    source: Source
    source_account: SourceAccount
    source_region: SourceRegion
    replica: Replica
    replica_account: ReplicaAccount
    replica_region: ReplicaRegion
    source_profile: SourceProfile = None
    replica_profile: ReplicaProfile = None
    backfill_principal: BackfillPrincipal = None
    mfa_delete: MfaDelete = None
    source_kms_key: SourceKmsKey = None
    replica_kms_key: ReplicaKmsKey = None

    def config(self, out: str | None = None) -> SetupConfig:
        """The validated SetupConfig; with `out`, every document is written there too."""
        from backfill.setup.model import make_config

        cfg = guard(lambda: make_config(**{f: getattr(self, f) for f in self.__dataclass_fields__}))
        if out:
            _write_documents(cfg, out)
        return cfg


def _write_documents(cfg: SetupConfig, out: str) -> None:
    from backfill.setup import documents as d
    from backfill.setup.steps import documents

    def write() -> None:
        path = Path(out)
        try:
            path.mkdir(parents=True, exist_ok=True)
            for name, doc in documents(cfg).items():
                (path / name).write_text(d.dumps(doc), encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write the documents into {out}: {exc.strerror or exc}") from None

    guard(write)


def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return guard(lambda: anyio.run(functools.partial(fn, *args, say=typer.echo, **kwargs)))


@setup_app.command()
@options
def plan(
    pair: Pair,
    out: Annotated[str, typer.Option("--out", help="Directory for the JSON documents.")] = "backfill-setup",
) -> None:
    """Change nothing: write every JSON document to --out and print the ordered steps, each with its `aws` command."""
    from backfill.setup.steps import render_plan

    cfg = pair.config(out)
    typer.echo(render_plan(cfg, out), nl=False)


@setup_app.command()
@options
def apply(
    pair: Pair,
    out: Out = None,
    mfa: Annotated[
        str | None,
        typer.Option(
            "--mfa",
            help="With --mfa-delete: 'SERIAL CODE', the root user's MFA device ARN and its current code.",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Create or repair the replication set-up, step by step; each step says created, updated or unchanged."""
    cfg = pair.config(out)
    if mfa and not cfg.mfa_delete:
        raise fail("--mfa goes with --mfa-delete source|replica")
    if not yes:
        if not sys.stdin.isatty():
            raise fail(
                "apply changes two AWS accounts and asks first, but there is no terminal to ask on: pass --yes "
                "(`backfill setup plan` shows what it does)"
            )
        from backfill.setup.steps import apply_steps, header

        typer.echo(header(cfg))
        steps = apply_steps(cfg, out or ".")
        for n, step in enumerate(steps, 1):
            typer.echo(f"{n:>2}. {step.title}  [{step.side.name} account {step.side.account}]")
        if not typer.confirm(f"Run these {len(steps)} steps (each is skipped when already in place)?"):
            typer.echo("nothing changed", err=True)
            raise typer.Exit(1)
    _run(_run_module().apply, cfg, mfa=mfa)


@setup_app.command()
@options
def check(pair: Pair, out: Out = None) -> None:
    """Read both accounts and report every drift from the plan: exit 0 healthy, 1 drift (for cron or CI)."""
    raise typer.Exit(_run(_run_module().check, pair.config(out)))


@setup_app.command("grant-backfill")
@options
def grant_backfill(pair: Pair, out: Out = None) -> None:
    """Add one statement to the source bucket policy: the replica account may list and read every version."""
    _run(_run_module().grant_backfill, pair.config(out))


@setup_app.command("revoke-backfill")
@options
def revoke_backfill(pair: Pair, out: Out = None) -> None:
    """Remove that statement, and only it, from the source bucket policy."""
    _run(_run_module().revoke_backfill, pair.config(out))


@setup_app.command()
@options
def alert(
    pair: Pair,
    notify: Annotated[
        str, typer.Option("--notify", help="EMAIL or HTTPS-URL that gets the alert.", show_default=False)
    ],
    out: Out = None,
) -> None:
    """Alert --notify when replication of the source bucket is removed or weakened (EventBridge rule → SNS)."""
    cfg = pair.config(out)
    from backfill.setup.model import notify_protocol

    target = guard(lambda: notify_protocol(notify))
    _run(_run_module().alert, cfg, target)
