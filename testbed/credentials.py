"""A `credential_process` for the tests: temporary credentials that a test can make the server refuse.

    [profile night]
    credential_process = /path/to/python -m testbed.credentials /path/to/state-dir

The AWS CLI and botocore run the command and read one JSON object from its stdout:
{"Version": 1, "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"} (ISO 8601); with an
Expiration the credentials are temporary and are refreshed by running the command again before
they expire (https://docs.aws.amazon.com/cli/latest/userguide/cli-configure-sourcing-external.html,
https://docs.aws.amazon.com/sdkref/latest/guide/feature-process-credentials.html). botocore's
RefreshableCredentials refresh in two windows (botocore/credentials.py,
_DEFAULT_ADVISORY_REFRESH_TIMEOUT = 15 min, _DEFAULT_MANDATORY_REFRESH_TIMEOUT = 10 min): inside
the advisory window a failed refresh keeps the old credentials; inside the mandatory window it
raises. assume-role, SSO, web identity, container and instance roles go through the same class.

The state directory holds `pool.json` (a list of [access key, secret key]: SeaweedFS identities to
hand out, one after another), optionally `valid_for` (seconds until Expiration; default 3600) and
`fail` (when it exists, the process prints its content to stderr and exits 1: a refresh that
fails, as an expired `aws sso login` or a revoked role makes it). Each run hands out the next
key pair of the pool, and appends "<access key> <unix time>" to `issued`.

Why key pairs and not session tokens: SeaweedFS reads x-amz-security-token as one of its own STS
tokens and refuses a request that carries another (InvalidAccessKeyId), and it knows static keys
only. So each issue is another static identity, and testbed.gate's `expired_credentials` rule,
in front of the server, answers ExpiredToken for the keys a test revokes or for keys older than
a lifetime: what S3 answers once an STS session has run out.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

POOL = 300  # identities in the pool: more than a test issues (one per refresh, every few seconds)


def identities(prefix: str = "night", n: int = POOL) -> list[dict[str, object]]:
    """SeaweedFS identities for the pool (backfill.seaweed.seaweed_server's `identities`)."""
    return [
        {
            "name": f"{prefix}-{i}",
            "credentials": [{"accessKey": f"{prefix}-{i}", "secretKey": f"{prefix}-{i}-secret"}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        for i in range(n)
    ]


def write_state(directory: Path, *, prefix: str = "night", n: int = POOL, valid_for: float = 3600) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    pool = [[f"{prefix}-{i}", f"{prefix}-{i}-secret"] for i in range(n)]
    (directory / "pool.json").write_text(json.dumps(pool))
    (directory / "valid_for").write_text(str(valid_for))


def issued(directory: Path) -> dict[str, float]:
    """The access keys handed out so far, with when (time.time()), oldest first."""
    path = directory / "issued"
    if not path.exists():
        return {}
    out: dict[str, float] = {}
    for line in path.read_text().splitlines():
        key, _, when = line.partition(" ")
        out[key] = float(when)
    return out


def profile_config(directory: Path, profile: str, *, region: str = "us-east-1") -> str:
    """An AWS config file section whose credentials come from this process."""
    return (
        f"[profile {profile}]\nregion = {region}\n"
        f"credential_process = {sys.executable} {Path(__file__).resolve()} {directory}\n"
    )


def fail_refreshes(directory: Path, message: str = "the session has expired: log in again") -> None:
    (directory / "fail").write_text(message)


def main(argv: list[str]) -> int:
    directory = Path(argv[0])
    if (directory / "fail").exists():
        sys.stderr.write((directory / "fail").read_text() + "\n")
        return 1
    pool = json.loads((directory / "pool.json").read_text())
    valid_path = directory / "valid_for"
    valid_for = float(valid_path.read_text()) if valid_path.exists() else 3600.0
    path = directory / "issued"
    n = len(path.read_text().splitlines()) if path.exists() else 0
    access_key, secret_key = pool[n % len(pool)]
    with path.open("a") as f:
        f.write(f"{access_key} {time.time():.3f}\n")
    expiration = datetime.now(UTC) + timedelta(seconds=valid_for)
    sys.stdout.write(
        json.dumps(
            {
                "Version": 1,
                "AccessKeyId": access_key,
                "SecretAccessKey": secret_key,
                "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
