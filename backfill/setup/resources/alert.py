"""The alert of a setup: the SNS topic and its policy, the EventBridge rule and its target, the subscriptions."""

from __future__ import annotations

import json
from typing import Any

from backfill.errors import UserError
from backfill.setup import documents as d
from backfill.setup.model import SetupConfig
from backfill.setup.resources.base import Context, Resource

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
