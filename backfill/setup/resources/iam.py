"""The IAM side of a setup: the replication role, its permissions policy, and the attachment of one to the other."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from backfill.setup import documents as d
from backfill.setup.model import SetupConfig
from backfill.setup.resources.base import Context, Resource

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
