"""`backfill setup …`: the typer sub-app. Options → SetupConfig → run.py → exit code.

Exit codes: 0 done (check: healthy); 1 check found drift, or apply was not confirmed;
2 a usage, credential, permission or ownership error (one line, no traceback).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import typer

from backfill.errors import UserError
from backfill.setup import documents as d
from backfill.setup import run
from backfill.setup.model import SetupConfig, make_config, notify_protocol
from backfill.setup.steps import apply_steps, documents, header, render_plan

T = TypeVar("T")

setup_app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show s3://BUCKET[/PREFIX], not rich markup
    help="Set up cross-account, cross-region replication of a bucket (plan, apply, check), the read grant "
    "for a backfill, and an alert when replication is removed or weakened.",
)


def _guard(fn: Callable[[], T]) -> T:
    from backfill.cli import _guard as guard  # the CLI's one mapping of UserError → exit 2

    return guard(fn)


def _fail(message: str) -> typer.Exit:
    from backfill.cli import _fail as fail  # "backfill: error: …" on stderr, exit 2

    return fail(message)


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
Out = Annotated[str | None, typer.Option("--out", help="Write every JSON document into this directory.")]


_CONFIG_OPTIONS = (
    "source",
    "source_account",
    "source_region",
    "source_profile",
    "replica",
    "replica_account",
    "replica_region",
    "replica_profile",
    "backfill_principal",
    "mfa_delete",
)


def _config(options: dict[str, Any]) -> SetupConfig:
    """The command's options (its locals()) → a validated SetupConfig; with --out, the documents too."""
    cfg = _guard(lambda: make_config(**{k: options[k] for k in _CONFIG_OPTIONS}))
    if options.get("out"):
        _write_documents(cfg, options["out"])
    return cfg


def _write_documents(cfg: SetupConfig, out: str) -> None:
    def write() -> None:
        path = Path(out)
        try:
            path.mkdir(parents=True, exist_ok=True)
            for name, doc in documents(cfg).items():
                (path / name).write_text(d.dumps(doc), encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write the documents into {out}: {exc.strerror or exc}") from None

    _guard(write)


def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return _guard(lambda: anyio.run(functools.partial(fn, *args, say=typer.echo, **kwargs)))


@setup_app.command()
def plan(
    source: Source,
    source_account: SourceAccount,
    source_region: SourceRegion,
    replica: Replica,
    replica_account: ReplicaAccount,
    replica_region: ReplicaRegion,
    source_profile: SourceProfile = None,
    replica_profile: ReplicaProfile = None,
    out: Annotated[str, typer.Option("--out", help="Directory for the JSON documents.")] = "backfill-setup",
    backfill_principal: BackfillPrincipal = None,
    mfa_delete: MfaDelete = None,
) -> None:
    """Change nothing: write every JSON document to --out and print the ordered steps, each with its `aws` command."""
    cfg = _config(locals())
    typer.echo(render_plan(cfg, out), nl=False)


@setup_app.command()
def apply(
    source: Source,
    source_account: SourceAccount,
    source_region: SourceRegion,
    replica: Replica,
    replica_account: ReplicaAccount,
    replica_region: ReplicaRegion,
    source_profile: SourceProfile = None,
    replica_profile: ReplicaProfile = None,
    out: Out = None,
    backfill_principal: BackfillPrincipal = None,
    mfa_delete: MfaDelete = None,
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
    cfg = _config(locals())
    if mfa and not cfg.mfa_delete:
        raise _fail("--mfa goes with --mfa-delete source|replica")
    if not yes:
        if not sys.stdin.isatty():
            raise _fail(
                "apply changes two AWS accounts and asks first, but there is no terminal to ask on: pass --yes "
                "(`backfill setup plan` shows what it does)"
            )
        typer.echo(header(cfg))
        steps = apply_steps(cfg, out or ".")
        for n, step in enumerate(steps, 1):
            typer.echo(f"{n:>2}. {step.title}  [{step.side.name} account {step.side.account}]")
        if not typer.confirm(f"Run these {len(steps)} steps (each is skipped when already in place)?"):
            typer.echo("nothing changed", err=True)
            raise typer.Exit(1)
    _run(run.apply, cfg, mfa=mfa)


@setup_app.command()
def check(
    source: Source,
    source_account: SourceAccount,
    source_region: SourceRegion,
    replica: Replica,
    replica_account: ReplicaAccount,
    replica_region: ReplicaRegion,
    source_profile: SourceProfile = None,
    replica_profile: ReplicaProfile = None,
    out: Out = None,
    backfill_principal: BackfillPrincipal = None,
    mfa_delete: MfaDelete = None,
) -> None:
    """Read both accounts and report every drift from the plan: exit 0 healthy, 1 drift (for cron or CI)."""
    cfg = _config(locals())
    raise typer.Exit(_run(run.check, cfg))


@setup_app.command("grant-backfill")
def grant_backfill(
    source: Source,
    source_account: SourceAccount,
    source_region: SourceRegion,
    replica: Replica,
    replica_account: ReplicaAccount,
    replica_region: ReplicaRegion,
    source_profile: SourceProfile = None,
    replica_profile: ReplicaProfile = None,
    out: Out = None,
    backfill_principal: BackfillPrincipal = None,
    mfa_delete: MfaDelete = None,
) -> None:
    """Add one statement to the source bucket policy: the replica account may list and read every version."""
    cfg = _config(locals())
    _run(run.grant_backfill, cfg)


@setup_app.command("revoke-backfill")
def revoke_backfill(
    source: Source,
    source_account: SourceAccount,
    source_region: SourceRegion,
    replica: Replica,
    replica_account: ReplicaAccount,
    replica_region: ReplicaRegion,
    source_profile: SourceProfile = None,
    replica_profile: ReplicaProfile = None,
    out: Out = None,
    backfill_principal: BackfillPrincipal = None,
    mfa_delete: MfaDelete = None,
) -> None:
    """Remove that statement, and only it, from the source bucket policy."""
    cfg = _config(locals())
    _run(run.revoke_backfill, cfg)


@setup_app.command()
def alert(
    source: Source,
    source_account: SourceAccount,
    source_region: SourceRegion,
    replica: Replica,
    replica_account: ReplicaAccount,
    replica_region: ReplicaRegion,
    notify: Annotated[
        str, typer.Option("--notify", help="EMAIL or HTTPS-URL that gets the alert.", show_default=False)
    ],
    source_profile: SourceProfile = None,
    replica_profile: ReplicaProfile = None,
    out: Out = None,
    backfill_principal: BackfillPrincipal = None,
    mfa_delete: MfaDelete = None,
) -> None:
    """Alert --notify when replication of the source bucket is removed or weakened (EventBridge rule → SNS)."""
    cfg = _config(locals())
    target = _guard(lambda: notify_protocol(notify))
    _run(run.alert, cfg, target)
