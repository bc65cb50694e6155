"""Error kinds, and the one place where S3 errors are classified.

- UserError: usage, configuration, credentials, permissions, a missing bucket, a
  foreign manifest. The CLI prints its message on one line and exits 2.
- RetryableError: throttling, 5xx, timeouts, dropped connections. Retried with
  capped, jittered backoff; throttling also shrinks the concurrency.
- ObjectError: this one version cannot be copied (it vanished, a precondition
  failed, the server refused it). Recorded as failed; the run goes on and exits 1.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from datetime import UTC, datetime
from typing import Any, TypeVar

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ProxyConnectionError,
    ReadTimeoutError,
    RefreshWithMFAUnsupportedError,
    ResponseStreamingError,
    SSLError,
    SSOError,
    TokenRetrievalError,
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
    """A denial. Fatal at the start of a run; later, the one object's failure. `code`: S3's error code."""

    def __init__(self, message: str, code: str = "", who: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.who = who


class RetryableError(BackfillError):
    """A transient failure.

    `throttled`: the server asked us to slow down (the request was not carried out).
    `ambiguous`: the request may have been carried out although no success came
    back (a connection lost after the request went out, a timeout, a 5xx): a write
    must be looked for before it is sent again, or it could land twice.
    """

    def __init__(
        self, message: str, *, throttled: bool = False, ambiguous: bool = False, unreachable: bool = False
    ) -> None:
        super().__init__(message)
        self.throttled = throttled
        self.ambiguous = ambiguous
        # No connection could be made (refused, timed out, no route, no name): the endpoint as a
        # whole may be gone, not this request's object. pacing.EndpointHealth waits these out.
        self.unreachable = unreachable


class StopRun(UserError):
    """The run cannot go on now, though nothing it did is wrong: it stops like Ctrl-C (the manifest
    flushed, no version failed for it), exits 2 with one line and the command that resumes."""


class OutageTimeout(StopRun):
    """The endpoint stayed unreachable longer than --outage-timeout."""


class CredentialsExpired(StopRun):
    """The credentials stopped working: expired, revoked, or a refresh that failed."""


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


# The credentials ran out (not a missing permission): S3's ExpiredToken and InvalidToken (400), STS-style
# ExpiredTokenException (403): https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html and the
# services' "Common Errors" pages.
EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "InvalidToken", "TokenRefreshRequired"})
# Once requests have worked with these credentials, these mean they changed under the run.
SIGNATURE_CODES = frozenset({"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidClientTokenId"})
# 403 RequestTimeTooSkewed: the request's date is more than 15 minutes from the server's clock.
SKEW_CODES = frozenset({"RequestTimeTooSkewed", "RequestExpired"})
# botocore's refreshable credentials (assume-role, SSO, credential_process, container and instance roles,
# web identity) raise these when a refresh fails inside the mandatory window (10 min before expiry).
_REFRESH_ERRORS = (CredentialRetrievalError, TokenRetrievalError, SSOError, RefreshWithMFAUnsupportedError)


def _profile_name(profile_hint: str) -> str:
    return profile_hint.removeprefix("profile ") if profile_hint.startswith("profile ") else ""


def credentials_expired(profile_hint: str, detail: str) -> CredentialsExpired:
    """Expired or revoked credentials, or a refresh that failed: one line naming them and how to renew them."""
    name = _profile_name(profile_hint)
    who = profile_hint or "the default credentials"
    if name:
        how = (
            f"renew them (`aws sso login --profile {name}` for SSO; for assume-role or a credential_process, "
            "what its source needs, e.g. a fresh MFA code)"
        )
    else:
        how = "renew them (new AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, or `aws sso login`)"
    return CredentialsExpired(
        f"the credentials of {who} expired or could not be renewed ({detail}): {how}, then run the same command "
        "again to resume"
    )


def _parse_time(text: str) -> float | None:
    text = text.strip()
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y%m%dT%H%M%SZ", "%a, %d %b %Y %H:%M:%S GMT"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


def clock_skew(error: dict[str, Any], headers: dict[str, Any]) -> UserError:
    """RequestTimeTooSkewed as one line: how far this machine's clock is from the server's."""
    request_time = _parse_time(str(error.get("RequestTime", "")))
    server_time = _parse_time(str(error.get("ServerTime", ""))) or _parse_time(str(headers.get("date", "")))
    how = "too far from the server's"
    if server_time is not None:
        offset = (request_time or time.time()) - server_time  # > 0: our clock is ahead
        how = f"{abs(offset) / 60:.0f} min {'ahead of' if offset > 0 else 'behind'} the server's"
    return UserError(
        f"this machine's clock is {how} ({error.get('Code') or 'RequestTimeTooSkewed'}; S3 takes at most 15 min): "
        "fix its time source (NTP, e.g. `timedatectl set-ntp true`, or the OS's automatic time), then run again"
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


_VERIFY_DETAIL = re.compile(r"certificate verify failed: ([^(')\]]+)")


def certificate_problem(endpoint: str, detail: str) -> UserError:
    """A TLS failure as one line: what is wrong with the certificate, and whether AWS_CA_BUNDLE is the fix.

    AWS_CA_BUNDLE (or a profile's ca_bundle) names the CAs that botocore, the AWS CLI and the
    lean path trust instead of botocore's bundle: what a private CA or a TLS-inspecting proxy needs
    (https://docs.aws.amazon.com/cli/latest/userguide/cli-configure-files.html#cli-configure-files-global).
    """
    found = _VERIFY_DETAIL.search(detail)
    why = found.group(1).strip().rstrip(".") if found else detail.strip()
    if "mismatch" in detail or "not valid for" in detail or "match" in why:
        return UserError(
            f"the TLS certificate of {endpoint} is issued for another host name ({why}): reach the endpoint "
            "by a name its certificate names (--endpoint-url, AWS_ENDPOINT_URL); AWS_CA_BUNDLE cannot fix this"
        )
    if found:
        return UserError(
            f"the TLS certificate of {endpoint} is not trusted ({why}): if the endpoint (or a TLS-inspecting "
            "proxy on the way) uses a CA of its own, set AWS_CA_BUNDLE to that CA's PEM file"
        )
    return UserError(
        f"TLS with {endpoint} failed ({why}): check that the endpoint speaks HTTPS on that port, and "
        "AWS_CA_BUNDLE if it uses a CA of its own"
    )


def error_code(exc: ClientError) -> str:
    err: dict[str, Any] = exc.response.get("Error", {})
    return str(err.get("Code", ""))


def http_status(exc: ClientError) -> int:
    meta: dict[str, Any] = exc.response.get("ResponseMetadata", {})
    return int(meta.get("HTTPStatusCode", 0) or 0)


def _endpoint(url: str) -> str:
    """scheme://host:port of a request URL (the certificate belongs to it, not to the bucket or key)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else (url or "the endpoint")


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
        if code in EXPIRED_CODES:
            return credentials_expired(profile_hint, f"{code}: {msg}")
        if code in SKEW_CODES:
            meta: dict[str, Any] = exc.response.get("ResponseMetadata", {})
            return clock_skew(exc.response.get("Error", {}), meta.get("HTTPHeaders", {}) or {})
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
                + " (`backfill setup grant-backfill` grants the source reads) or use other credentials",
                code=code,
                who=profile_hint,
            )
        if code == "NoSuchBucket":
            return UserError(f"bucket {bucket or '?'} does not exist ({what}): check the bucket name and region")
        if code == "PermanentRedirect" or code == "AuthorizationHeaderMalformed":
            return UserError(f"{what}: wrong region for bucket {bucket or '?'} ({code}): pass the right --*-region")
        return ObjectError(f"{what}: {code or status}: {msg}", code=code)
    if isinstance(exc, _REFRESH_ERRORS):
        return credentials_expired(profile_hint, f"{type(exc).__name__}: {' '.join(str(exc).split())}")
    if isinstance(exc, ProfileNotFound):
        return UserError(f"{exc}: check --source-profile/--dest-profile and ~/.aws/config")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return UserError(
            "no AWS credentials found: pass --source-profile/--dest-profile, "
            "or set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, NoRegionError):
        return UserError("no AWS region configured: pass --source-region/--dest-region or set AWS_REGION")
    if isinstance(exc, SSLError):  # before EndpointConnectionError: botocore's SSLError is one
        return certificate_problem(_endpoint(str(exc.kwargs.get("endpoint_url", ""))), str(exc))
    if isinstance(exc, ConnectTimeoutError):  # no connection: the request was not sent
        endpoint = _endpoint(str(exc.kwargs.get("endpoint_url", "")))
        return RetryableError(f"{what}: cannot connect to {endpoint} (timed out)", unreachable=True)
    if isinstance(exc, EndpointConnectionError):
        # aiohttp's reset of a request already sent ends up here too: it may have been carried out.
        # Only a failure to connect (aiohttp's ClientConnectorError, a proxy that is down) says
        # the endpoint is unreachable, and that nothing was sent: no need to look for the write
        # (looking made every copy refused during an outage list its key once the endpoint was
        # back, as the lean path's ConnectFailed never did: seconds of delay after each outage).
        endpoint = exc.kwargs.get("endpoint_url", "the endpoint")
        cause = exc.kwargs.get("error")
        import aiohttp  # loaded already (only aiobotocore raises this); not at start-up, for a lean run

        unreachable = isinstance(cause, aiohttp.ClientConnectorError)
        return RetryableError(
            f"{what}: connection to {endpoint} failed: {exc}", ambiguous=not unreachable, unreachable=unreachable
        )
    if isinstance(exc, ProxyConnectionError):  # HTTPS_PROXY's proxy cannot be reached: nothing was sent
        return RetryableError(f"{what}: {exc}", unreachable=True)
    if isinstance(exc, ConnectFailed):
        return RetryableError(f"{what}: {exc}", unreachable=True)
    if isinstance(exc, TRANSPORT_ERRORS):
        return RetryableError(f"{what}: {type(exc).__name__}: {exc}", ambiguous=True)
    return exc
