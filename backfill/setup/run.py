"""apply, check, grant-backfill, revoke-backfill and alert: the resources, in order, against live AWS.

Each function reports through `say` (one line per step) and raises UserError for
anything the user must fix; check returns its exit code (0 healthy, 1 drift).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from backfill.errors import UserError
from backfill.setup import documents as d
from backfill.setup.aws import Clients
from backfill.setup.model import SetupConfig, Side
from backfill.setup.resources import alert_resources, backfill_grant, replication_resources
from backfill.setup.resources.base import Context, Resource
from backfill.setup.resources.s3 import Bucket, Versioning, mfa_needs
from backfill.setup.steps import backfill_kms_note, header

Say = Callable[[str], None]


@contextlib.asynccontextmanager
async def _context(cfg: SetupConfig, sides: tuple[Side, ...], mfa: str | None = None) -> AsyncIterator[Context]:
    """Clients for the run, after making sure each side's credentials act in that side's account."""
    async with contextlib.AsyncExitStack() as stack:
        ctx = Context(cfg, Clients(cfg, stack), mfa=mfa)
        for side in sides:
            await ctx.clients.identity(side)
        yield ctx


async def _converge(ctx: Context, resources: list[Resource], say: Say, what: str) -> None:
    """Make each resource as planned, in order; say created / updated / unchanged for each.

    A failure names the steps that were done and those that were not.
    """
    total = len(resources)
    for n, res in enumerate(resources, 1):
        try:
            current = await res.read(ctx)
            problems = res.drift(ctx, current)
            status = await res.write(ctx, current) if problems else "unchanged"
        except UserError as exc:
            done = f"steps 1–{n - 1} are done" if n > 2 else ("step 1 is done" if n == 2 else "nothing was changed")
            rest = f"steps {n}–{total} are not" if n < total else f"step {n} is not"
            raise UserError(
                f"{what} stopped at step {n} ({res.label}): {exc} — {done}, {rest}; fix this and run {what} again"
            ) from None
        why = f" ({'; '.join(problems)})" if status == "updated" else ""
        say(f"{n:>2}. {res.label}: {status}{why}")


async def apply(cfg: SetupConfig, say: Say, *, mfa: str | None = None) -> None:
    async with _context(cfg, (cfg.source, cfg.replica), mfa) as ctx:
        if cfg.mfa_delete:
            await _mfa_preflight(ctx, cfg.side(cfg.mfa_delete))
        say(header(cfg))
        await _converge(ctx, replication_resources(cfg), say, "apply")
        say("replication is set up; `backfill setup check` (same options) verifies it at any time")
        if cfg.kms:
            say(
                "the KMS key policies are not changed by apply: each key's administrator merges the statements "
                "that `backfill setup plan` writes (source-key-policy-statements.json, "
                "replica-key-policy-statements.json) into its key's policy"
            )


async def _mfa_preflight(ctx: Context, side: Side) -> None:
    """Refuse before changing anything when MFA Delete is still to be enabled and cannot be."""
    if await Bucket(side).read(ctx) is not None:
        state = await Versioning(side).read(ctx)
        if state["MFADelete"] == "Enabled":
            return
    arn = await ctx.clients.identity(side)
    if not ctx.mfa or not arn.endswith(":root"):
        raise UserError(mfa_needs(side))


async def check(cfg: SetupConfig, say: Say) -> int:
    async with _context(cfg, (cfg.source, cfg.replica)) as ctx:
        say(header(cfg))
        drifts = 0
        absent: dict[str, str] = {}  # key → what is missing, for the resources that need it
        for res in [*replication_resources(cfg), *alert_resources(cfg, None)]:
            blocked = [absent[k] for k in res.needs if k in absent]
            if blocked:
                absent[res.key] = blocked[0]
                say(f"  -      {res.label}: not checked (see above)")
                continue
            current = await res.read(ctx)
            problems = res.drift(ctx, current)
            if current is None and problems:
                absent[res.key] = problems[0]
            for p in problems:
                say(f"  DRIFT  {p}")
            drifts += len(problems)
            if not problems:
                say(f"  ok     {res.label}")
        grant = backfill_grant(cfg)
        if "source-bucket" not in absent and d.by_sid(await grant.read(ctx), d.SID_BACKFILL_GRANT):
            say(
                f"  note   the backfill grant {d.SID_BACKFILL_GRANT} is in the source bucket policy: "
                "remove it with `backfill setup revoke-backfill` once the backfill is done"
            )
        if drifts:
            say(
                f"{drifts} drift{'s' if drifts > 1 else ''}: `backfill setup apply` (same options) repairs the "
                "replication, `backfill setup alert --notify EMAIL|HTTPS-URL` the alert"
            )
            return 1
        say("healthy")
        return 0


async def _source_bucket(ctx: Context) -> None:
    if await Bucket(ctx.cfg.source).read(ctx) is None:
        raise UserError(f"the source bucket {ctx.cfg.source.bucket} does not exist")


async def grant_backfill(cfg: SetupConfig, say: Say) -> None:
    async with _context(cfg, (cfg.source,)) as ctx:
        await _source_bucket(ctx)
        res = backfill_grant(cfg)
        current = await res.read(ctx)
        problems = res.drift(ctx, current)
        status = await res.write(ctx, current) if problems else "unchanged"
        src, rep = cfg.source, cfg.replica
        say(
            f"grant {d.SID_BACKFILL_GRANT} in the policy of s3://{src.bucket}: {status} "
            f"({cfg.backfill_principal} may list and read its versions; nothing else in the policy changed)"
        )
        copy = f"backfill copy s3://{src.bucket} s3://{rep.bucket}"
        if rep.profile:
            copy += f" --source-profile {rep.profile} --dest-profile {rep.profile}"
        say(f"note: {backfill_kms_note(cfg)}")
        say(f"next: {copy} --source-region {src.region} --dest-region {rep.region}")
        say("then: backfill setup revoke-backfill (same options) removes the grant")


async def revoke_backfill(cfg: SetupConfig, say: Say) -> None:
    async with _context(cfg, (cfg.source,)) as ctx:
        await _source_bucket(ctx)
        res = backfill_grant(cfg)
        current = await res.read(ctx)
        where = f"the policy of s3://{cfg.source.bucket}"
        if d.by_sid(current, d.SID_BACKFILL_GRANT) is None:
            say(f"grant {d.SID_BACKFILL_GRANT} in {where}: unchanged (there is none)")
            return
        rest = d.without_statement(current, d.SID_BACKFILL_GRANT)
        await res.put(ctx, rest)
        left = "it had no other statement: the policy was deleted" if rest is None else "other statements kept"
        say(f"grant {d.SID_BACKFILL_GRANT} in {where}: removed ({left})")


async def alert(cfg: SetupConfig, notify: tuple[str, str], say: Say) -> None:
    async with _context(cfg, (cfg.source,)) as ctx:
        say(f"alert on s3://{cfg.source.bucket} (account {cfg.source.account}, {cfg.source.region}) → {notify[1]}")
        await _converge(ctx, alert_resources(cfg, notify), say, "alert")
        protocol, endpoint = notify
        if protocol == "email":
            say(f"SNS sends a confirmation email to {endpoint}: alerts arrive once the link in it is followed")
        else:
            say(f"SNS posts a SubscriptionConfirmation to {endpoint}: alerts arrive once it is confirmed")
        say(
            "EventBridge sees these calls only if CloudTrail records them: the source account needs a trail that "
            f"logs management events (write events at least), multi-region or in {cfg.source.region}"
        )
