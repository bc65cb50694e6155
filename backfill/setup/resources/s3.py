"""The S3 side of a setup: both buckets and their versioning (and MFA Delete), bucket policy statements,
and the source bucket's replication configuration."""

from __future__ import annotations

import json
from typing import Any

import anyio
from botocore.exceptions import ClientError

from backfill.errors import UserError
from backfill.setup import documents as d
from backfill.setup.aws import aws_error
from backfill.setup.model import SetupConfig, Side
from backfill.setup.resources.base import Context, Resource


def _region_of(exc_response: dict[str, Any]) -> str:
    headers = exc_response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return str(headers.get("x-amz-bucket-region", ""))


# --- buckets ---------------------------------------------------------------------------


async def _locked(ctx: Context, side: Side) -> bool:
    """Whether the side's bucket has Object Lock (no when it does not exist or may not be read)."""
    client = await ctx.clients.get(side, "s3")
    try:
        r = await client.get_object_lock_configuration(Bucket=side.bucket, ExpectedBucketOwner=side.account)
    except ClientError:
        return False
    return bool(r.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")


class Bucket(Resource):
    def __init__(self, side: Side) -> None:
        super().__init__(side, f"{side.name} bucket {side.bucket} ({side.region}, account {side.account})")
        self.key = f"{side.name}-bucket"

    async def read(self, ctx: Context) -> Any:
        s = self.side
        client = await ctx.clients.get(s, "s3")
        try:
            r = await client.head_bucket(Bucket=s.bucket, ExpectedBucketOwner=s.account)
            region = _region_of(r)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            region = _region_of(exc.response)
            if code in ("404", "NoSuchBucket"):
                return None
            if region and region != s.region:
                raise self._elsewhere(region) from None
            if code in ("403", "AccessDenied"):
                raise UserError(
                    f"the {s.name} bucket {s.bucket} exists but {s.who} cannot use it as account {s.account}: "
                    f"it belongs to another account (choose another name for {s.flag}), "
                    "or the credentials lack s3:ListBucket on it"
                ) from None
            raise aws_error(exc, side=s, action="s3:ListBucket", what=self.label) from None
        except Exception as exc:
            err = aws_error(exc, side=s, action="s3:ListBucket", what=self.label)
            if err is exc:
                raise
            raise err from None
        if region and region != s.region:
            raise self._elsewhere(region)
        await self._check_owner(ctx)
        current: dict[str, Any] = {"region": region or s.region}
        if s.name == "replica" and await _locked(ctx, ctx.cfg.source):
            current["lock_missing"] = not await _locked(ctx, s)
        return current

    def _elsewhere(self, region: str) -> UserError:
        s = self.side
        return UserError(f"the {s.name} bucket {s.bucket} is in {region}, not {s.region}: fix {s.option('region')}")

    async def _check_owner(self, ctx: Context) -> None:
        """Bucket names are global: make sure this one is the account's own. (On AWS,
        ExpectedBucketOwner already refuses a stranger's bucket; ListBuckets says it everywhere.)"""
        s = self.side
        client = await ctx.clients.get(s, "s3")
        names: set[str] = set()
        params: dict[str, Any] = {"Prefix": s.bucket, "MaxBuckets": 1000}
        try:
            while True:
                r = await client.list_buckets(**params)
                names.update(b["Name"] for b in r.get("Buckets", []))
                token = r.get("ContinuationToken")
                if not token or s.bucket in names:
                    break
                params["ContinuationToken"] = token
        except ClientError:
            return  # e.g. no s3:ListAllMyBuckets: then ExpectedBucketOwner is the guard
        if s.bucket not in names:
            raise UserError(
                f"the {s.name} bucket {s.bucket} belongs to another AWS account, not to {s.account}: "
                f"choose another bucket name, or fix {s.option('account')}"
            )

    def drift(self, ctx: Context, current: Any) -> list[str]:
        if not current:
            return [f"the {self.side.name} bucket {self.side.bucket} does not exist"]
        if current.get("lock_missing"):
            return [
                f"the replica bucket {self.side.bucket} has no Object Lock and the source has: its locked versions "
                "cannot be replicated or backfilled there (enable it: aws s3api put-object-lock-configuration)"
            ]
        return []

    async def write(self, ctx: Context, current: Any) -> str:
        s = self.side
        params: dict[str, Any] = {"Bucket": s.bucket}
        if s.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": s.region}
        if s.name == "replica" and await _locked(ctx, ctx.cfg.source):
            # A locked source's versions keep their retention only in a bucket with Object Lock (replication
            # too needs it on the destination: DstBucketObjectLockConfigMissing); it is set at creation.
            params["ObjectLockEnabledForBucket"] = True
        if current and current.get("lock_missing"):
            raise UserError(
                f"the replica bucket {s.bucket} exists without Object Lock and the source has Object Lock: enable it "
                f"(aws s3api put-object-lock-configuration --bucket {s.bucket} --object-lock-configuration "
                "ObjectLockEnabled=Enabled), then apply again"
            )
        client = await ctx.clients.get(s, "s3")
        try:
            await client.create_bucket(**params)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "BucketAlreadyOwnedByYou":
                return "unchanged"  # created meanwhile, by the same account
            if code == "BucketAlreadyExists":
                raise UserError(
                    f"the bucket name {s.bucket} is taken by another AWS account (bucket names are global): "
                    f"choose another name for {s.flag}"
                ) from None
            raise aws_error(exc, side=s, action="s3:CreateBucket", what=self.label) from None
        return "created"


class Versioning(Resource):
    def __init__(self, side: Side) -> None:
        super().__init__(side, f"versioning of the {side.name} bucket")
        self.key = f"{side.name}-versioning"
        self.needs = (f"{side.name}-bucket",)

    async def read(self, ctx: Context) -> Any:
        s = self.side
        r = await self.call(
            ctx,
            "s3",
            "get_bucket_versioning",
            action="s3:GetBucketVersioning",
            what=f"bucket {s.bucket}",
            Bucket=s.bucket,
            ExpectedBucketOwner=s.account,
        )
        return {"Status": r.get("Status", ""), "MFADelete": r.get("MFADelete", "")}

    def drift(self, ctx: Context, current: Any) -> list[str]:
        status = current["Status"]
        if status == "Enabled":
            return []
        state = "suspended" if status == "Suspended" else "off"
        return [f"versioning is {state} on the {self.side.name} bucket {self.side.bucket}"]

    async def write(self, ctx: Context, current: Any) -> str:
        s = self.side
        await self.call(
            ctx,
            "s3",
            "put_bucket_versioning",
            action="s3:PutBucketVersioning",
            what=f"bucket {s.bucket}",
            Bucket=s.bucket,
            ExpectedBucketOwner=s.account,
            VersioningConfiguration={"Status": "Enabled"},
        )
        return "updated"


class MfaDelete(Versioning):
    def __init__(self, side: Side) -> None:
        super().__init__(side)
        self.label = f"MFA Delete on the {side.name} bucket"
        self.key = "mfa-delete"

    def drift(self, ctx: Context, current: Any) -> list[str]:
        if current["MFADelete"] == "Enabled":
            return []
        return [f"MFA Delete is off on the {self.side.name} bucket {self.side.bucket}"]

    async def write(self, ctx: Context, current: Any) -> str:
        s = self.side
        if not ctx.mfa:
            raise UserError(mfa_needs(s))
        await self.call(
            ctx,
            "s3",
            "put_bucket_versioning",
            action="s3:PutBucketVersioning (with MFA Delete)",
            what=f"bucket {s.bucket}",
            Bucket=s.bucket,
            ExpectedBucketOwner=s.account,
            VersioningConfiguration={"Status": "Enabled", "MFADelete": "Enabled"},
            MFA=ctx.mfa,
        )
        return "updated"


def mfa_needs(side: Side) -> str:
    return (
        f"MFA Delete can only be enabled by the root user of account {side.account} with its MFA device "
        f"(not by an IAM user or role, even an administrator): pass {side.option('profile')} with the root "
        f"user's credentials and --mfa 'arn:aws:iam::{side.account}:mfa/DEVICE CODE', or drop --mfa-delete"
    )


# --- bucket policies: our statements, merged with the others ---------------------------


class PolicyStatements(Resource):
    """Our statements (by Sid) in a bucket policy; the policy's other statements are left alone."""

    def __init__(self, side: Side, key: str, label: str, statements: list[d.Doc]) -> None:
        super().__init__(side, label)
        self.key = key
        self.needs = (f"{side.name}-bucket",)
        self.statements = statements

    async def read(self, ctx: Context) -> Any:
        s = self.side
        r = await self.call(
            ctx,
            "s3",
            "get_bucket_policy",
            action="s3:GetBucketPolicy",
            what=f"bucket {s.bucket}",
            missing=("NoSuchBucketPolicy",),
            Bucket=s.bucket,
            ExpectedBucketOwner=s.account,
        )
        return json.loads(r["Policy"]) if r else None

    def drift(self, ctx: Context, current: Any) -> list[str]:
        return d.statement_drift(current, self.statements, f"the {self.label}")

    async def put(self, ctx: Context, doc: d.Doc | None) -> None:
        s = self.side
        if doc is None:
            await self.call(
                ctx,
                "s3",
                "delete_bucket_policy",
                action="s3:DeleteBucketPolicy",
                what=f"bucket {s.bucket}",
                Bucket=s.bucket,
                ExpectedBucketOwner=s.account,
            )
            return
        for attempt in range(8):
            try:
                await self.call(
                    ctx,
                    "s3",
                    "put_bucket_policy",
                    action="s3:PutBucketPolicy",
                    what=f"bucket {s.bucket}",
                    Bucket=s.bucket,
                    ExpectedBucketOwner=s.account,
                    Policy=json.dumps(doc),
                )
                return
            except UserError as exc:
                # A role created seconds ago is not yet a valid principal everywhere in AWS.
                if not (ctx.role_created and "MalformedPolicy" in str(exc) and attempt < 7):
                    raise
                await anyio.sleep(2 + 2 * attempt)

    async def write(self, ctx: Context, current: Any) -> str:
        absent = all(d.by_sid(current, st["Sid"]) is None for st in self.statements)
        await self.put(ctx, d.with_statements(current, self.statements))
        return "created" if absent else "updated"


# --- the replication configuration ----------------------------------------------------


def _covers_everything(rule: d.Doc) -> bool:
    f = rule.get("Filter")
    if f is None:
        return not rule.get("Prefix")  # the old schema's rule-level Prefix
    return not f or f == {"Prefix": ""}


class Replication(Resource):
    key = "replication"
    needs = ("source-bucket",)

    def __init__(self, cfg: SetupConfig) -> None:
        super().__init__(cfg.source, "replication configuration of the source bucket")

    async def read(self, ctx: Context) -> Any:
        s = self.side
        r = await self.call(
            ctx,
            "s3",
            "get_bucket_replication",
            action="s3:GetReplicationConfiguration",
            what=f"bucket {s.bucket}",
            missing=("ReplicationConfigurationNotFoundError",),
            Bucket=s.bucket,
            ExpectedBucketOwner=s.account,
        )
        return r["ReplicationConfiguration"] if r else None

    def drift(self, ctx: Context, current: Any) -> list[str]:
        cfg = ctx.cfg
        if current is None:
            return [f"the source bucket {cfg.source.bucket} has no replication configuration"]
        rules = current.get("Rules", [])
        rule = next((r for r in rules if r.get("ID") == cfg.rule_id), None)
        if rule is None:
            ids = ", ".join(str(r.get("ID")) for r in rules) or "none"
            return [f"the replication rule {cfg.rule_id} is missing (rules: {ids})"]
        problems = []
        where = f"replication rule {cfg.rule_id}"
        if current.get("Role") != cfg.role_arn:
            problems.append(f"replication uses the role {current.get('Role')}, not {cfg.role_arn}")
        if rule.get("Status") != "Enabled":
            problems.append(f"the {where} is disabled")
        dest = rule.get("Destination", {})
        if dest.get("Bucket") != cfg.replica.arn:
            problems.append(f"the {where} points at {dest.get('Bucket')}, not the replica {cfg.replica.arn}")
        if dest.get("Account") != cfg.replica.account:
            problems.append(f"the {where} names destination account {dest.get('Account')}, not {cfg.replica.account}")
        if dest.get("AccessControlTranslation", {}).get("Owner") != "Destination":
            problems.append(f"the {where} leaves replicas owned by the source account (no owner override)")
        if rule.get("DeleteMarkerReplication", {}).get("Status") != "Enabled":
            problems.append(f"the {where} does not replicate delete markers")
        if not _covers_everything(rule):
            problems.append(f"the {where} replicates only objects matching {json.dumps(rule.get('Filter'))}")
        if cfg.kms:
            sse_kms = rule.get("SourceSelectionCriteria", {}).get("SseKmsEncryptedObjects", {})
            if sse_kms.get("Status") != "Enabled":
                problems.append(f"the {where} does not replicate SSE-KMS objects (no SseKmsEncryptedObjects)")
            key = dest.get("EncryptionConfiguration", {}).get("ReplicaKmsKeyID")
            if key != cfg.replica_kms_key:
                problems.append(f"the {where} encrypts replicas with {key or 'no KMS key'}, not {cfg.replica_kms_key}")
        return problems

    async def write(self, ctx: Context, current: Any) -> str:
        cfg = ctx.cfg
        others = [r for r in (current or {}).get("Rules", []) if r.get("ID") != cfg.rule_id]
        if others and current.get("Role") != cfg.role_arn:
            raise UserError(
                f"the source bucket already replicates with the role {current.get('Role')} (rules "
                f"{', '.join(str(r.get('ID')) for r in others)}), and a replication configuration has one role "
                f"for all its rules: remove those rules, or give that role the permissions of {cfg.policy_name}"
            )
        used = {int(r.get("Priority", 0) or 0) for r in others}
        priority = 1 if 1 not in used else max(used) + 1
        doc = d.replication_configuration(cfg, others, priority)
        s = self.side
        await self.call(
            ctx,
            "s3",
            "put_bucket_replication",
            action="s3:PutReplicationConfiguration",
            what=f"bucket {s.bucket}",
            Bucket=s.bucket,
            ExpectedBucketOwner=s.account,
            ReplicationConfiguration=doc,
        )
        had_rule = current is not None and any(r.get("ID") == cfg.rule_id for r in current.get("Rules", []))
        return "updated" if had_rule else "created"
