"""Error kinds, and the one place where S3 errors are classified.

- UserError: usage, configuration, credentials, permissions, a missing bucket, a
  foreign manifest. The CLI prints its message on one line and exits 2.
- RetryableError: throttling, 5xx, timeouts, dropped connections. Retried with
  capped, jittered backoff; throttling also shrinks the concurrency.
- ObjectError: this one version cannot be copied (it vanished, a precondition
  failed, the server refused it). Recorded as failed; the run goes on and exits 1.
"""

from __future__ import annotations

from typing import Any, TypeVar

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
)

E = TypeVar("E", bound=BaseException)


def first_error(exc: BaseException, kind: type[E]) -> E | None:
    """The first exception of `kind` in `exc` or, depth first, in its exception groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            found = first_error(e, kind)
            if found is not None:
                return found
    return None


class BackfillError(Exception):
    """Base of the project's own errors."""


class ConnectFailed(ConnectionError):
    """No connection could be made: the request was never sent (raised by http1)."""


class UserError(BackfillError):
    """The user or the cloud said no: the run cannot go on. Exit code 2."""


class AccessDenied(UserError):
    """A denial. Fatal at the start of a run; later, the one object's failure."""


class RetryableError(BackfillError):
    """A transient failure.

    `throttled`: the server asked us to slow down (the request was not carried out).
    `ambiguous`: the request may have been carried out although no success came
    back (a connection lost after the request went out, a timeout, a 5xx): a write
    must be looked for before it is sent again, or it could land twice.
    """

    def __init__(self, message: str, *, throttled: bool = False, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.throttled = throttled
        self.ambiguous = ambiguous


class ObjectError(BackfillError):
    """One version failed for a reason of its own; `code` is the S3 error code."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"})
RETRY_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "OperationAborted",
        "InternalServerError",
        "BadGateway",
        "GatewayTimeout",
    }
)
# Refusals about one object, whatever their HTTP status (archived objects answer 403).
OBJECT_CODES = frozenset(
    {"InvalidObjectState", "ObjectNotInActiveTierError", "NoSuchVersion", "NoSuchKey", "PreconditionFailed"}
)
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AccountProblem",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
    }
)
TRANSPORT_ERRORS = (
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ResponseStreamingError,
    ConnectionError,
    TimeoutError,
)


# What a denied request needed, by the request's name (the first word of `what`).
_NEEDS = {
    "ListObjectVersions": "s3:ListBucketVersions on the source",
    "ListObjectsV2": "s3:ListBucket on the bucket",
    "CopyObject": "s3:GetObjectVersion (and s3:GetObjectVersionTagging) on the source and s3:PutObject on the replica",
    "UploadPartCopy": "s3:GetObjectVersion on the source and s3:PutObject on the replica",
    "CreateMultipartUpload": "s3:PutObject on the replica",
    "DeleteObject": "s3:DeleteObject on the replica",
    "HeadObject": "s3:GetObjectVersion",
    "GetObject": "s3:GetObjectVersion",
    "GetObjectTagging": "s3:GetObjectVersionTagging on the source",
}


def is_kms_denial(message: str) -> bool:
    """Whether an S3 denial's message is KMS's: S3 passes on what KMS said ("The ciphertext refers to a
    customer master key that does not exist, does not exist in this region, or you are not allowed to
    access.", or one naming a kms: action)."""
    m = message.lower()
    return "kms:" in m or "ciphertext refers to a customer master key" in m or "kms key" in m


def error_code(exc: ClientError) -> str:
    err: dict[str, Any] = exc.response.get("Error", {})
    return str(err.get("Code", ""))


def http_status(exc: ClientError) -> int:
    meta: dict[str, Any] = exc.response.get("ResponseMetadata", {})
    return int(meta.get("HTTPStatusCode", 0) or 0)


def classify(exc: BaseException, *, what: str, bucket: str = "", profile_hint: str = "") -> BaseException:
    """Turn an SDK exception into one of ours. Returns the exception to raise.

    `what` names the request ("copy s3://b/k") for the message; `bucket` and
    `profile_hint` let a denial say which credentials to fix.
    """
    if isinstance(exc, BackfillError):
        return exc
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = http_status(exc)
        msg = str(exc.response.get("Error", {}).get("Message", "")) or code
        if code in OBJECT_CODES:
            return ObjectError(f"{what}: {code}: {msg}", code=code)
        if code == "NotImplemented" or status == 501:  # the server lacks the feature: asking again won't help
            return ObjectError(f"{what}: not implemented by this server: {msg}", code=code or "NotImplemented")
        if code in THROTTLE_CODES or status == 429:
            return RetryableError(f"{what}: {code or status} (throttled)", throttled=True)
        if status == 503 and code in ("", "ServiceUnavailable", "503"):
            return RetryableError(f"{what}: {code or status} (throttled)", throttled=True)
        if code in RETRY_CODES or status >= 500:
            return RetryableError(f"{what}: {code or status}: {msg}", ambiguous=status >= 500)
        if (code in DENIED_CODES or status == 403) and is_kms_denial(msg):
            who = f" with {profile_hint}" if profile_hint else ""
            return AccessDenied(
                f"access denied by KMS{who} on {what} ({code}: {msg}): the version is SSE-KMS encrypted; the "
                "copying principal needs kms:Decrypt on its key, granted in the key's policy for a principal of "
                "another account (and kms:GenerateDataKey on the replica's key); objects under the AWS-managed "
                "aws/s3 key cannot be read from another account: re-encrypt them with a customer-managed key"
            )
        if code in DENIED_CODES or status == 403:
            who = f" with {profile_hint}" if profile_hint else ""
            needs = _NEEDS.get(what.partition(" ")[0])
            return AccessDenied(
                f"access denied{who} on {what} ({code}): "
                + (f"it needs {needs}; grant it" if needs else "grant the permission")
                + " (`backfill setup grant-backfill` grants the source reads) or use other credentials"
            )
        if code == "NoSuchBucket":
            return UserError(f"bucket {bucket or '?'} does not exist ({what}): check the bucket name and region")
        if code == "PermanentRedirect" or code == "AuthorizationHeaderMalformed":
            return UserError(f"{what}: wrong region for bucket {bucket or '?'} ({code}): pass the right --*-region")
        return ObjectError(f"{what}: {code or status}: {msg}", code=code)
    if isinstance(exc, ProfileNotFound):
        return UserError(f"{exc}: check --source-profile/--dest-profile and ~/.aws/config")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return UserError(
            "no AWS credentials found: pass --source-profile/--dest-profile, "
            "or set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, NoRegionError):
        return UserError("no AWS region configured: pass --source-region/--dest-region or set AWS_REGION")
    if isinstance(exc, ConnectTimeoutError):  # no connection: the request was not sent
        return RetryableError(f"{what}: cannot connect to {exc.kwargs.get('endpoint_url', 'the endpoint')}")
    if isinstance(exc, EndpointConnectionError):
        # aiohttp's reset of a request already sent ends up here too: it may have been carried out.
        endpoint = exc.kwargs.get("endpoint_url", "the endpoint")
        return RetryableError(f"{what}: connection to {endpoint} failed: {exc}", ambiguous=True)
    if isinstance(exc, ConnectFailed):
        return RetryableError(f"{what}: {exc}")
    if isinstance(exc, TRANSPORT_ERRORS):
        return RetryableError(f"{what}: {type(exc).__name__}: {exc}", ambiguous=True)
    return exc
