"""The AWS side of `backfill setup`: clients per account, identity checks, and errors.

Clients follow the AWS CLI's conventions through botocore: named profiles,
AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_<SERVICE>) for every service. S3 is
addressed path-style when an endpoint is configured, as in the rest of the
project. Every AWS error becomes one UserError line that names the account,
the credentials, the permission (IAM action) and what to do.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError, ProfileNotFound

from backfill.errors import DENIED_CODES, BackfillError, UserError, classify, error_code, http_status
from backfill.s3 import _session
from backfill.setup.model import SetupConfig, Side


def _s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _config(service: str) -> AioConfig:
    s3: dict[str, Any] = {}
    if service == "s3" and _s3_endpoint():
        s3["addressing_style"] = "path"
    return AioConfig(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60, s3=s3)


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
        self._sessions: dict[str | None, Any] = {}
        self._clients: dict[tuple[str, str], Any] = {}

    async def get(self, side: Side, service: str) -> Any:
        key = (side.name, service)
        if key not in self._clients:
            try:
                session = self._sessions.get(side.profile)
                if session is None:
                    try:
                        session = self._sessions[side.profile] = _session(side.profile)
                    except UserError as exc:
                        raise aws_error(exc.__cause__ or exc, side=side, action="", what="") from None
                ctx = session.client(
                    service,
                    region_name=side.region,
                    endpoint_url=_s3_endpoint() if service == "s3" else None,
                    config=_config(service),
                )
                self._clients[key] = await self._stack.enter_async_context(ctx)
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
