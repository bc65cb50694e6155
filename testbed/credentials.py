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

The state directory holds `keys.json` ({"access_key", "secret_key"}: the SeaweedFS identity to
hand out) and optionally `valid_for` (seconds until Expiration; default 3600). Each run issues a
new session token `tok-<unix time>-<n>`, appends it to `issued`, and prints the credentials.
SeaweedFS ignores session tokens (it knows static keys only), so a test puts testbed.gate's
`expired_tokens` rule in front of it: the gate answers ExpiredToken for the tokens the test
revokes, or for tokens older than a lifetime, as S3 does for an STS session that has run out.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def write_state(directory: Path, access_key: str, secret_key: str, *, valid_for: float = 3600) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "keys.json").write_text(json.dumps({"access_key": access_key, "secret_key": secret_key}))
    (directory / "valid_for").write_text(str(valid_for))


def issued(directory: Path) -> list[str]:
    """The session tokens handed out so far, oldest first."""
    path = directory / "issued"
    return path.read_text().split() if path.exists() else []


def profile_config(directory: Path, profile: str, *, region: str = "us-east-1") -> str:
    """An AWS config file section whose credentials come from this process."""
    return (
        f"[profile {profile}]\nregion = {region}\n"
        f"credential_process = {sys.executable} {Path(__file__).resolve()} {directory}\n"
    )


def main(argv: list[str]) -> int:
    directory = Path(argv[0])
    keys = json.loads((directory / "keys.json").read_text())
    valid_path = directory / "valid_for"
    valid_for = float(valid_path.read_text()) if valid_path.exists() else 3600.0
    n = len(issued(directory))
    token = f"tok-{time.time():.3f}-{n}"
    with (directory / "issued").open("a") as f:
        f.write(token + "\n")
    expiration = datetime.now(UTC) + timedelta(seconds=valid_for)
    sys.stdout.write(
        json.dumps(
            {
                "Version": 1,
                "AccessKeyId": keys["access_key"],
                "SecretAccessKey": keys["secret_key"],
                "SessionToken": token,
                "Expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
