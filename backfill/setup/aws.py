"""The AWS side of `backfill setup`: clients per account, identity checks, and errors.

Clients come from backfill.s3's factory and follow the AWS CLI's conventions
through botocore: named profiles, AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_<SERVICE>)
for every service. S3 is addressed path-style when an endpoint is configured, and
its requests are retried by pacing.Pacer as in the rest of the project; IAM, STS,
SNS and EventBridge keep the SDK's standard retries. Every AWS error becomes one
UserError line that names the account, the credentials, the permission (IAM
action) and what to do.
"""

from __future__ import annotations

import contextlib
from typing import Any

from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError, ProfileNotFound

from backfill.errors import DENIED_CODES, BackfillError, UserError, classify, error_code, http_status
from backfill.pacing import Pacer, RateLimiter
from backfill.s3 import Sessions, endpoint_from_env, open_client
from backfill.setup.model import SetupConfig, Side


class _Paced:
    """An S3 client whose requests go through a Pacer (the product's one retry policy for S3).

    Setup maps botocore's own errors to its messages (aws_error, and the
    resources' checks of error codes): when the pacer gives up, the request's
    own exception is raised, not the pacer's classification of it. Setup's S3
    writes are idempotent settings (a bucket created twice by its owner answers
    BucketAlreadyOwnedByYou), so a write whose answer was lost is sent again.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._pacer = Pacer(None, RateLimiter(None))

    def __getattr__(self, op: str) -> Any:
        fn = getattr(self._client, op)
        if not callable(fn):
            return fn

        async def paced(**params: Any) -> Any:
            try:
                return await self._pacer.run(op, lambda: fn(**params))
            except BackfillError as exc:
                if isinstance(exc.__cause__, Exception):
                    raise exc.__cause__ from None  # the SDK's error, as setup's error mapping expects
                raise

        return paced


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _credentials_error(exc: BaseException, side: Side) -> UserError | None:
    if isinstance(exc, ProfileNotFound):
        return UserError(f"{exc}: check {side.option('profile')} and ~/.aws/config")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return UserError(
            f"no AWS credentials for the {side.name} account {side.account}: pass {side.option('profile')}, "
            "or set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    return None


def aws_error(exc: BaseException, *, side: Side, action: str, what: str) -> BaseException:
    """One clear line for an error of a request `action` (an IAM action name) about `what`."""
    if isinstance(exc, BackfillError):
        return exc
    cred = _credentials_error(exc, side)
    if cred is not None:
        return cred
    if isinstance(exc, ClientError):
        code = error_code(exc)
        msg = _one_line(exc.response.get("Error", {}).get("Message", "") or code)
        if code in DENIED_CODES or http_status(exc) == 403:
            return UserError(
                f"access denied: {side.who}, in the {side.name} account {side.account}, may not {action} on {what} "
                f"({code}): grant that permission, or use an administrator's credentials of account {side.account}"
            )
        if code in ("NoSuchBucket", "404"):
            return UserError(f"{what}: the {side.name} bucket {side.bucket} does not exist")
        return UserError(f"{action} on {what} failed: {code or http_status(exc)}: {msg}")
    err = classify(exc, what=f"{action} on {what}")
    if isinstance(err, BackfillError):
        hint = ": check the network, the region and AWS_ENDPOINT_URL" if "cannot connect" in str(err) else ""
        return UserError(_one_line(str(err)) + hint)
    return err


class Clients:
    """One client per (side, service), opened on first use and closed with the exit stack."""

    def __init__(self, cfg: SetupConfig, stack: contextlib.AsyncExitStack) -> None:
        self.cfg = cfg
        self._stack = stack
        self._sessions = Sessions()
        self._clients: dict[tuple[str, str], Any] = {}

    async def get(self, side: Side, service: str) -> Any:
        key = (side.name, service)
        if key not in self._clients:
            try:
                try:
                    session = self._sessions.get(side.profile)
                except UserError as exc:
                    raise aws_error(exc.__cause__ or exc, side=side, action="", what="") from None
                ctx = open_client(
                    session,
                    service,
                    region=side.region,
                    endpoint_url=endpoint_from_env() if service == "s3" else None,
                )
                client = await self._stack.enter_async_context(ctx)
                self._clients[key] = _Paced(client) if service == "s3" else client
            except Exception as exc:
                raise aws_error(exc, side=side, action=f"open a {service} client", what="the profile") from None
        return self._clients[key]

    async def call(
        self,
        side: Side,
        service: str,
        op: str,
        *,
        action: str,
        what: str,
        missing: tuple[str, ...] = (),
        **params: Any,
    ) -> Any:
        """One request; None when its error code is one of `missing` (the thing does not exist)."""
        client = await self.get(side, service)
        try:
            return await getattr(client, op)(**params)
        except ClientError as exc:
            if error_code(exc) in missing:
                return None
            raise aws_error(exc, side=side, action=action, what=what) from None
        except Exception as exc:
            err = aws_error(exc, side=side, action=action, what=what)
            if err is exc:
                raise
            raise err from None

    async def identity(self, side: Side) -> str:
        """The caller's ARN; a UserError when the credentials act in another account."""
        r = await self.call(side, "sts", "get_caller_identity", action="sts:GetCallerIdentity", what="the caller")
        account, arn = str(r["Account"]), str(r["Arn"])
        if account != side.account:
            raise UserError(
                f"{side.who} act as {arn} in account {account}, not in the {side.name} account {side.account} "
                f"({side.option('account')}): pass {side.option('profile')} with credentials of account {side.account}"
            )
        return arn
