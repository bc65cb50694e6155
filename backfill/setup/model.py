"""What `backfill setup` works on: two sides, and every name and ARN derived from them (pure)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from backfill.config import parse_s3_url
from backfill.errors import UserError

SideName = Literal["source", "replica"]

_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_KEY_ARN = re.compile(r"^arn:(aws[a-z-]*):kms:([a-z0-9-]+):(\d{12}):key/[A-Za-z0-9-]+$")
_PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:(root|role/.+|user/.+|assumed-role/.+)$")


def partition(region: str) -> str:
    """The ARN partition of a region (replication cannot cross partitions)."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _name(prefix: str, bucket: str, limit: int) -> str:
    """prefix + bucket, shortened with a stable hash when longer than the service allows."""
    name = f"{prefix}{bucket}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(bucket.encode()).hexdigest()[:8]
    return f"{name[: limit - 9]}-{digest}"


@dataclass(frozen=True, slots=True)
class Side:
    """One bucket and the account, region and credentials it lives with."""

    name: SideName
    bucket: str
    account: str
    region: str
    profile: str | None = None

    @property
    def arn(self) -> str:
        return f"arn:{partition(self.region)}:s3:::{self.bucket}"

    @property
    def who(self) -> str:
        """The credentials, for messages (plural: "… act as", "… may not")."""
        if self.profile:
            return f"the credentials of profile {self.profile} ({self.option('profile')})"
        return "the default credentials"

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    def option(self, what: str) -> str:
        return f"--{self.name}-{what}"


@dataclass(frozen=True, slots=True)
class SetupConfig:
    source: Side
    replica: Side
    backfill_principal: str  # who `grant-backfill` lets read the source
    mfa_delete: SideName | None = None
    # SSE-KMS: the customer managed key of the source's objects and the one replicas are encrypted with
    # (both or neither: S3 replicates SSE-KMS objects only to a ReplicaKmsKeyID).
    source_kms_key: str | None = None
    replica_kms_key: str | None = None

    # --- names, all derived from the source bucket so that two setups never collide -------

    @property
    def partition(self) -> str:
        return partition(self.source.region)

    @property
    def role_name(self) -> str:
        return _name("backfill-replication-", self.source.bucket, 64)

    @property
    def role_arn(self) -> str:
        return f"arn:{self.partition}:iam::{self.source.account}:role/{self.role_name}"

    @property
    def policy_name(self) -> str:
        return self.role_name

    @property
    def policy_arn(self) -> str:
        return f"arn:{self.partition}:iam::{self.source.account}:policy/{self.policy_name}"

    @property
    def rule_id(self) -> str:
        return _name("backfill-to-", self.replica.bucket, 255)

    @property
    def alert_name(self) -> str:
        return _name("backfill-replication-alert-", self.source.bucket, 64)

    @property
    def topic_arn(self) -> str:
        return f"arn:{self.partition}:sns:{self.source.region}:{self.source.account}:{self.alert_name}"

    @property
    def event_rule_arn(self) -> str:
        return f"arn:{self.partition}:events:{self.source.region}:{self.source.account}:rule/{self.alert_name}"

    def side(self, name: SideName) -> Side:
        return self.source if name == "source" else self.replica

    @property
    def kms(self) -> bool:
        return self.source_kms_key is not None


def replica_root(account: str, region: str) -> str:
    return f"arn:{partition(region)}:iam::{account}:root"


def _bucket(url: str, option: str) -> str:
    u = parse_s3_url(url)
    if u.prefix:
        raise UserError(f"{option} {url}: replication is set up for a whole bucket: write s3://BUCKET without a prefix")
    if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", u.bucket):
        raise UserError(f"{option} {url}: {u.bucket!r} is not a valid name for a new bucket (3–63 of a-z 0-9 . -)")
    return u.bucket


def _side(name: SideName, url: str, account: str, region: str, profile: str | None) -> Side:
    bucket = _bucket(url, f"--{name}")
    if not _ACCOUNT.match(account):
        raise UserError(f"--{name}-account {account!r}: an AWS account ID is 12 digits")
    if not _REGION.match(region):
        raise UserError(f"--{name}-region {region!r} is not an AWS region name (like eu-west-1)")
    return Side(name, bucket, account, region, profile or None)


def _kms_key(arn: str, side: Side) -> str:
    """A customer managed key's full ARN, in the side's account and region (S3 uses a key of the bucket's
    region; an alias would be resolved in the requester's account: the S3 API reference recommends the key ARN)."""
    option = side.option("kms-key")
    m = _KEY_ARN.match(arn)
    if not m:
        raise UserError(
            f"{option} {arn!r}: give the key's full ARN, arn:{partition(side.region)}:kms:{side.region}:"
            f"{side.account}:key/KEY-ID (not an alias: S3 would resolve it in the requester's account)"
        )
    if m.group(2) != side.region or m.group(3) != side.account:
        raise UserError(
            f"{option} {arn}: the {side.name} bucket's key must be in its account {side.account} and region "
            f"{side.region} (S3 encrypts with a key of the bucket's region)"
        )
    return arn


def make_config(
    *,
    source: str,
    source_account: str,
    source_region: str,
    source_profile: str | None,
    replica: str,
    replica_account: str,
    replica_region: str,
    replica_profile: str | None,
    backfill_principal: str | None = None,
    mfa_delete: str | None = None,
    source_kms_key: str | None = None,
    replica_kms_key: str | None = None,
) -> SetupConfig:
    """Validate the options and build the configuration; every mistake is one UserError."""
    src = _side("source", source, source_account, source_region, source_profile)
    rep = _side("replica", replica, replica_account, replica_region, replica_profile)
    if src.bucket == rep.bucket:
        raise UserError("--source and --replica name the same bucket")
    if partition(src.region) != partition(rep.region):
        raise UserError(
            f"{src.region} and {rep.region} are in different AWS partitions: S3 cannot replicate between them"
        )
    principal = backfill_principal or replica_root(rep.account, rep.region)
    if not _PRINCIPAL.match(principal):
        raise UserError(
            f"--backfill-principal {principal!r}: give an IAM ARN such as arn:aws:iam::{rep.account}:root "
            f"or arn:aws:iam::{rep.account}:role/NAME"
        )
    if principal.split(":")[4] != rep.account:
        raise UserError(
            f"--backfill-principal {principal} is not in the replica account {rep.account}: the grant is for "
            "the replica account's backfill principal"
        )
    mfa: SideName | None
    if mfa_delete is None:
        mfa = None
    elif mfa_delete == "source":
        mfa = "source"
    elif mfa_delete == "replica":
        mfa = "replica"
    else:
        raise UserError(f"--mfa-delete takes source or replica, not {mfa_delete!r}")
    if bool(source_kms_key) != bool(replica_kms_key):
        # S3 refuses a rule with SseKmsEncryptedObjects and no ReplicaKmsKeyID, and the reverse
        # (API_SourceSelectionCriteria, API_EncryptionConfiguration; hashicorp/terraform-provider-aws#26241).
        raise UserError(
            "--source-kms-key and --replica-kms-key go together: S3 replicates SSE-KMS objects only when the rule "
            "also names the replica's key, and takes a replica key only for SSE-KMS objects"
        )
    src_key = _kms_key(source_kms_key, src) if source_kms_key else None
    rep_key = _kms_key(replica_kms_key, rep) if replica_kms_key else None
    return SetupConfig(src, rep, principal, mfa, src_key, rep_key)


def notify_protocol(notify: str) -> tuple[Literal["email", "https"], str]:
    """--notify EMAIL|HTTPS-URL → (SNS protocol, endpoint)."""
    if notify.startswith("https://") and len(notify) > len("https://"):
        return "https", notify
    if notify.startswith("http://"):
        raise UserError(f"--notify {notify}: SNS delivers alerts to https:// endpoints only")
    if _EMAIL.match(notify):
        return "email", notify
    raise UserError(f"--notify {notify!r}: give an email address or an https:// URL")
