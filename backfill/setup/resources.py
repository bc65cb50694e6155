"""Each piece of live state a setup consists of: read it, say how it differs from the plan, write it.

`apply` is read → drift → write (when there is drift); `check` is read → drift.
Because both use the same comparison, a check is healthy exactly when an apply
would change nothing.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

import anyio
from botocore.exceptions import ClientError

from backfill.errors import UserError
from backfill.setup import documents as d
from backfill.setup.aws import Clients, aws_error
from backfill.setup.model import SetupConfig, Side


@dataclass
class Context:
    cfg: SetupConfig
    clients: Clients
    mfa: str | None = None  # "SERIAL CODE" for MFA Delete
    role_created: bool = False  # a new role takes a few seconds to be usable as a principal


class Resource:
    key = ""
    needs: tuple[str, ...] = ()

    def __init__(self, side: Side, label: str) -> None:
        self.side = side
        self.label = label  # what check calls it

    async def read(self, ctx: Context) -> Any:
        raise NotImplementedError

    def drift(self, ctx: Context, current: Any) -> list[str]:
        raise NotImplementedError

    async def write(self, ctx: Context, current: Any) -> str:
        """Make it as planned: "created" or "updated" ("unchanged" if someone else just did)."""
        raise NotImplementedError

    async def call(self, ctx: Context, service: str, op: str, *, action: str, what: str = "", **kw: Any) -> Any:
        return await ctx.clients.call(self.side, service, op, action=action, what=what or self.label, **kw)


def _region_of(exc_response: dict[str, Any]) -> str:
    headers = exc_response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return str(headers.get("x-amz-bucket-region", ""))


# --- buckets ---------------------------------------------------------------------------


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
        return {"region": region or s.region}

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
        return [] if current else [f"the {self.side.name} bucket {self.side.bucket} does not exist"]

    async def write(self, ctx: Context, current: Any) -> str:
        s = self.side
        params: dict[str, Any] = {"Bucket": s.bucket}
        if s.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": s.region}
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


# --- the replication role --------------------------------------------------------------


def _decoded(doc: Any) -> Any:
    """IAM returns policy documents URL-encoded; botocore usually decodes them already."""
    if isinstance(doc, str):
        return json.loads(urllib.parse.unquote(doc))
    return doc


class Role(Resource):
    key = "role"

    def __init__(self, cfg: SetupConfig) -> None:
        super().__init__(cfg.source, f"replication role {cfg.role_name}")
        self.name = cfg.role_name

    async def read(self, ctx: Context) -> Any:
        r = await self.call(ctx, "iam", "get_role", action="iam:GetRole", missing=("NoSuchEntity",), RoleName=self.name)
        return r["Role"] if r else None

    def drift(self, ctx: Context, current: Any) -> list[str]:
        if current is None:
            return [f"the {self.label} does not exist"]
        if not d.same(_decoded(current.get("AssumeRolePolicyDocument")), d.role_trust_policy()):
            return [f"the trust policy of the {self.label} was changed: it must trust s3.amazonaws.com only"]
        return []

    async def write(self, ctx: Context, current: Any) -> str:
        trust = json.dumps(d.role_trust_policy())
        if current is None:
            cfg = ctx.cfg
            await self.call(
                ctx,
                "iam",
                "create_role",
                action="iam:CreateRole",
                RoleName=self.name,
                AssumeRolePolicyDocument=trust,
                Description=f"S3 replication of {cfg.source.bucket} to {cfg.replica.bucket}",
            )
            ctx.role_created = True
            return "created"
        await self.call(
            ctx,
            "iam",
            "update_assume_role_policy",
            action="iam:UpdateAssumeRolePolicy",
            RoleName=self.name,
            PolicyDocument=trust,
        )
        return "updated"


class Policy(Resource):
    key = "policy"

    def __init__(self, cfg: SetupConfig) -> None:
        super().__init__(cfg.source, f"permissions policy {cfg.policy_name}")
        self.arn = cfg.policy_arn
        self.name = cfg.policy_name

    async def read(self, ctx: Context) -> Any:
        r = await self.call(
            ctx, "iam", "get_policy", action="iam:GetPolicy", missing=("NoSuchEntity",), PolicyArn=self.arn
        )
        if r is None:
            return None
        vid = r["Policy"]["DefaultVersionId"]
        v = await self.call(
            ctx, "iam", "get_policy_version", action="iam:GetPolicyVersion", PolicyArn=self.arn, VersionId=vid
        )
        return _decoded(v["PolicyVersion"]["Document"])

    def drift(self, ctx: Context, current: Any) -> list[str]:
        if current is None:
            return [f"the {self.label} does not exist"]
        if not d.same(current, d.role_permissions_policy(ctx.cfg)):
            return [f"the {self.label} was changed"]
        return []

    async def write(self, ctx: Context, current: Any) -> str:
        doc = json.dumps(d.role_permissions_policy(ctx.cfg))
        if current is None:
            cfg = ctx.cfg
            await self.call(
                ctx,
                "iam",
                "create_policy",
                action="iam:CreatePolicy",
                PolicyName=self.name,
                PolicyDocument=doc,
                Description=f"S3 replication of {cfg.source.bucket} to {cfg.replica.bucket}",
            )
            return "created"
        versions = await self.call(
            ctx, "iam", "list_policy_versions", action="iam:ListPolicyVersions", PolicyArn=self.arn
        )
        old = [v for v in versions.get("Versions", []) if not v.get("IsDefaultVersion")]
        if len(old) >= 4:  # IAM keeps at most five versions: make room
            oldest = min(old, key=lambda v: v["CreateDate"])
            await self.call(
                ctx,
                "iam",
                "delete_policy_version",
                action="iam:DeletePolicyVersion",
                PolicyArn=self.arn,
                VersionId=oldest["VersionId"],
            )
        await self.call(
            ctx,
            "iam",
            "create_policy_version",
            action="iam:CreatePolicyVersion",
            PolicyArn=self.arn,
            PolicyDocument=doc,
            SetAsDefault=True,
        )
        return "updated"


class Attachment(Resource):
    key = "attachment"
    needs = ("role", "policy")

    def __init__(self, cfg: SetupConfig) -> None:
        super().__init__(cfg.source, f"attachment of {cfg.policy_name} to the role")
        self.role = cfg.role_name
        self.arn = cfg.policy_arn

    async def read(self, ctx: Context) -> Any:
        arns: set[str] = set()
        params: dict[str, Any] = {"RoleName": self.role}
        while True:
            r = await self.call(
                ctx, "iam", "list_attached_role_policies", action="iam:ListAttachedRolePolicies", **params
            )
            arns.update(p["PolicyArn"] for p in r.get("AttachedPolicies", []))
            if not r.get("IsTruncated"):
                return arns
            params["Marker"] = r["Marker"]

    def drift(self, ctx: Context, current: Any) -> list[str]:
        return [] if self.arn in current else [f"the policy {self.arn} is not attached to the role {self.role}"]

    async def write(self, ctx: Context, current: Any) -> str:
        await self.call(
            ctx, "iam", "attach_role_policy", action="iam:AttachRolePolicy", RoleName=self.role, PolicyArn=self.arn
        )
        return "created"


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


# --- the alert -------------------------------------------------------------------------


class Topic(Resource):
    key = "alert-topic"

    def __init__(self, cfg: SetupConfig) -> None:
        super().__init__(cfg.source, f"alert topic {cfg.alert_name}")
        self.arn = cfg.topic_arn
        self.name = cfg.alert_name

    async def read(self, ctx: Context) -> Any:
        r = await self.call(
            ctx,
            "sns",
            "get_topic_attributes",
            action="sns:GetTopicAttributes",
            missing=("NotFound",),
            TopicArn=self.arn,
        )
        return r["Attributes"] if r else None

    def drift(self, ctx: Context, current: Any) -> list[str]:
        return [] if current is not None else [f"no alert: the SNS topic {self.arn} does not exist"]

    async def write(self, ctx: Context, current: Any) -> str:
        await self.call(ctx, "sns", "create_topic", action="sns:CreateTopic", Name=self.name)
        return "created"


class TopicPolicy(Topic):
    key = "alert-topic-policy"
    needs = ("alert-topic",)

    def __init__(self, cfg: SetupConfig) -> None:
        super().__init__(cfg)
        self.label = "alert topic's policy"

    async def read(self, ctx: Context) -> Any:
        attrs = await super().read(ctx)
        return json.loads(attrs["Policy"]) if attrs and attrs.get("Policy") else None

    def drift(self, ctx: Context, current: Any) -> list[str]:
        return d.statement_drift(current, [d.alert_topic_statement(ctx.cfg)], f"the {self.label}")

    async def write(self, ctx: Context, current: Any) -> str:
        ours = d.alert_topic_statement(ctx.cfg)
        doc = d.with_statements(current, [ours])
        await self.call(
            ctx,
            "sns",
            "set_topic_attributes",
            action="sns:SetTopicAttributes",
            TopicArn=self.arn,
            AttributeName="Policy",
            AttributeValue=json.dumps(doc),
        )
        return "created" if d.by_sid(current, ours["Sid"]) is None else "updated"


class Rule(Resource):
    key = "alert-rule"

    def __init__(self, cfg: SetupConfig) -> None:
        super().__init__(cfg.source, f"alert rule {cfg.alert_name}")
        self.name = cfg.alert_name

    async def read(self, ctx: Context) -> Any:
        return await self.call(
            ctx,
            "events",
            "describe_rule",
            action="events:DescribeRule",
            missing=("ResourceNotFoundException",),
            Name=self.name,
        )

    def drift(self, ctx: Context, current: Any) -> list[str]:
        if current is None:
            return [
                f"no alert: the EventBridge rule {self.name} does not exist in {self.side.region}: "
                "run backfill setup alert --notify EMAIL|HTTPS-URL"
            ]
        problems = []
        if current.get("State") != "ENABLED":
            problems.append(f"the {self.label} is disabled")
        pattern = json.loads(current.get("EventPattern") or "{}")
        if not d.same(pattern, d.alert_event_pattern(ctx.cfg)):
            problems.append(f"the {self.label} matches other events than planned")
        return problems

    async def write(self, ctx: Context, current: Any) -> str:
        await self.call(
            ctx,
            "events",
            "put_rule",
            action="events:PutRule",
            Name=self.name,
            EventPattern=json.dumps(d.alert_event_pattern(ctx.cfg)),
            State="ENABLED",
            Description=f"Replication of s3://{ctx.cfg.source.bucket} removed or weakened",
        )
        return "created" if current is None else "updated"


class Target(Resource):
    key = "alert-target"
    needs = ("alert-rule",)

    def __init__(self, cfg: SetupConfig) -> None:
        super().__init__(cfg.source, "alert rule's target")
        self.rule = cfg.alert_name

    async def read(self, ctx: Context) -> Any:
        targets: list[d.Doc] = []
        params: dict[str, Any] = {"Rule": self.rule}
        while True:
            r = await self.call(ctx, "events", "list_targets_by_rule", action="events:ListTargetsByRule", **params)
            targets += r.get("Targets", [])
            if not r.get("NextToken"):
                return next((t for t in targets if t.get("Id") == d.ALERT_TARGET_ID), None)
            params["NextToken"] = r["NextToken"]

    def drift(self, ctx: Context, current: Any) -> list[str]:
        want = d.alert_target(ctx.cfg)
        if current is None:
            return [f"the alert rule {self.rule} does not send to the topic {want['Arn']}"]
        if not d.same(current, want):
            return [f"the alert rule's target {d.ALERT_TARGET_ID} was changed"]
        return []

    async def write(self, ctx: Context, current: Any) -> str:
        r = await self.call(
            ctx, "events", "put_targets", action="events:PutTargets", Rule=self.rule, Targets=[d.alert_target(ctx.cfg)]
        )
        if r.get("FailedEntryCount"):
            failed = r.get("FailedEntries", [{}])[0]
            raise UserError(
                f"events:PutTargets on {self.rule}: {failed.get('ErrorCode')}: {failed.get('ErrorMessage')}"
            )
        return "created" if current is None else "updated"


async def _subscriptions(res: Resource, ctx: Context, topic: str) -> list[d.Doc]:
    subs: list[d.Doc] = []
    params: dict[str, Any] = {"TopicArn": topic}
    while True:
        r = await res.call(ctx, "sns", "list_subscriptions_by_topic", action="sns:ListSubscriptionsByTopic", **params)
        subs += r.get("Subscriptions", [])
        if not r.get("NextToken"):
            return subs
        params["NextToken"] = r["NextToken"]


def _pending(sub: d.Doc) -> bool:
    return str(sub.get("SubscriptionArn", "")).lower() in ("pendingconfirmation", "pending confirmation")


class Subscription(Resource):
    """The subscription `alert --notify` asks for."""

    key = "alert-subscription"
    needs = ("alert-topic",)

    def __init__(self, cfg: SetupConfig, protocol: str, endpoint: str) -> None:
        super().__init__(cfg.source, f"{protocol} subscription {endpoint}")
        self.cfg = cfg
        self.protocol = protocol
        self.endpoint = endpoint

    async def read(self, ctx: Context) -> Any:
        subs = await _subscriptions(self, ctx, self.cfg.topic_arn)
        return next(
            (s for s in subs if s.get("Protocol") == self.protocol and s.get("Endpoint") == self.endpoint), None
        )

    def drift(self, ctx: Context, current: Any) -> list[str]:
        return [] if current is not None else [f"{self.endpoint} is not subscribed to the alert topic"]

    async def write(self, ctx: Context, current: Any) -> str:
        await self.call(
            ctx,
            "sns",
            "subscribe",
            action="sns:Subscribe",
            TopicArn=self.cfg.topic_arn,
            Protocol=self.protocol,
            Endpoint=self.endpoint,
            ReturnSubscriptionArn=True,
        )
        return "created"


class Subscribers(Resource):
    """What `check` asks of the alert's subscriptions: someone confirmed gets the alert."""

    key = "alert-subscribers"
    needs = ("alert-topic",)

    def __init__(self, cfg: SetupConfig) -> None:
        super().__init__(cfg.source, "alert subscriptions")
        self.topic = cfg.topic_arn

    async def read(self, ctx: Context) -> Any:
        return await _subscriptions(self, ctx, self.topic)

    def drift(self, ctx: Context, current: Any) -> list[str]:
        if not current:
            return ["the alert topic has no subscription: nobody gets the alert"]
        if all(_pending(s) for s in current):
            who = ", ".join(str(s.get("Endpoint")) for s in current)
            return [f"no alert subscription is confirmed yet ({who}): follow the link SNS sent"]
        return []

    async def write(self, ctx: Context, current: Any) -> str:
        raise UserError("subscribe with backfill setup alert --notify EMAIL|HTTPS-URL")


# --- the sets of resources ---------------------------------------------------------------


def replication_resources(cfg: SetupConfig) -> list[Resource]:
    """What apply makes and check inspects, in apply's order (steps.apply_steps has the same keys)."""
    out: list[Resource] = [
        Bucket(cfg.source),
        Versioning(cfg.source),
        Bucket(cfg.replica),
        Versioning(cfg.replica),
        Role(cfg),
        Policy(cfg),
        Attachment(cfg),
        PolicyStatements(cfg.replica, "replica-policy", "replica bucket policy", d.replica_bucket_statements(cfg)),
        Replication(cfg),
    ]
    if cfg.mfa_delete:
        out.append(MfaDelete(cfg.side(cfg.mfa_delete)))
    return out


def backfill_grant(cfg: SetupConfig) -> PolicyStatements:
    return PolicyStatements(cfg.source, "grant-backfill", "source bucket policy", [d.backfill_grant_statement(cfg)])


def alert_resources(cfg: SetupConfig, notify: tuple[str, str] | None) -> list[Resource]:
    """What alert makes (with --notify) or check inspects (without)."""
    out: list[Resource] = [Topic(cfg), TopicPolicy(cfg), Rule(cfg), Target(cfg)]
    if notify:
        out.append(Subscription(cfg, *notify))
    else:
        out.append(Subscribers(cfg))
    return out
