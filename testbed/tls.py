"""A test certificate authority and the certificates a local HTTPS S3 endpoint needs (`trustme`).

    ca = LocalCA.create(tmp_path)            # ca.bundle: the CA to put in AWS_CA_BUNDLE
    with seaweed_server(tls=ca.server) ...  # SeaweedFS's S3 gateway on https://localhost:PORT

What each file stands for (the AWS CLI reads a custom CA bundle from AWS_CA_BUNDLE or the
profile's `ca_bundle`, and otherwise trusts botocore's bundled certifi bundle; a corporate TLS
proxy or a private S3-compatible endpoint is the usual reason to set it: see
https://docs.aws.amazon.com/cli/latest/userguide/cli-configure-files.html#cli-configure-files-global
and aws/aws-cli#3296 (CERTIFICATE_VERIFY_FAILED until AWS_CA_BUNDLE names the proxy's CA)):

- `bundle`: our CA, the one to trust;
- `server`: a certificate for `localhost` only (so https://127.0.0.1:PORT is a hostname mismatch);
- `stranger`: another CA that signed nothing we serve (an AWS_CA_BUNDLE that does not match).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import boto3
import trustme
from botocore.config import Config

from backfill.seaweed import LocalS3, Server, Tls
from testbed.store import Store

HOSTNAME = "localhost"


@dataclass(frozen=True, slots=True)
class LocalCA:
    bundle: Path
    server: Tls
    stranger: Path

    @classmethod
    def create(cls, directory: Path, hostname: str = HOSTNAME) -> LocalCA:
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        cert = ca.issue_cert(hostname)
        bundle, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
        ca.cert_pem.write_to_path(str(bundle))
        with cert_file.open("wb") as f:
            for pem in cert.cert_chain_pems:
                f.write(pem.bytes())
        cert.private_key_pem.write_to_path(str(key_file))
        stranger = directory / "stranger-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(stranger))
        return cls(bundle, Tls(cert_file, key_file), stranger)


HTTP_PATHS = ["lean", "botocore"]  # backfill copy --http: the lean client for the hot calls, or botocore for all


@dataclass
class TlsBed:
    """One SeaweedFS that serves HTTPS (and plain HTTP, for a test's own set-up calls)."""

    server: Server
    ca: LocalCA
    https: Store  # reaches the server over HTTPS, AWS_CA_BUNDLE set
    plain: Store  # the same server over plain HTTP

    def env(self, **extra: str) -> dict[str, str]:
        return {**self.https.env, **extra}


def tls_store(info: LocalS3, ca: LocalCA) -> Store:
    client = boto3.client(
        "s3",
        endpoint_url=info.https_url,
        aws_access_key_id=info.access_key,
        aws_secret_access_key=info.secret_key,
        region_name="us-east-1",
        verify=str(ca.bundle),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
    env = {**info.env(), "AWS_ENDPOINT_URL": info.https_url, "AWS_CA_BUNDLE": str(ca.bundle)}
    return Store("seaweedfs", info.https_url, env, client)


def plain_store(info: LocalS3) -> Store:
    client = boto3.client(
        "s3",
        endpoint_url=info.endpoint_url,
        aws_access_key_id=info.access_key,
        aws_secret_access_key=info.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
    return Store("seaweedfs", info.endpoint_url, info.env(), client)
