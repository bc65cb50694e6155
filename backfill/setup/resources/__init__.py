"""Each piece of live state a setup consists of: read it, say how it differs from the plan, write it.

`apply` is read → drift → write (when there is drift); `check` is read → drift.
Because both use the same comparison, a check is healthy exactly when an apply
would change nothing.

- base.py   Context (config, clients, what this run did) and Resource (read / drift / write)
- s3.py     buckets, versioning, MFA Delete, bucket policy statements, the replication configuration
- iam.py    the replication role, its permissions policy, the attachment
- alert.py  the SNS topic and its policy, the EventBridge rule and target, subscriptions
- here      which resources each command works on, in order
"""

from __future__ import annotations

from backfill.setup import documents as d
from backfill.setup.model import SetupConfig
from backfill.setup.resources.alert import Rule, Subscribers, Subscription, Target, Topic, TopicPolicy
from backfill.setup.resources.base import Resource
from backfill.setup.resources.iam import Attachment, Policy, Role
from backfill.setup.resources.s3 import Bucket, MfaDelete, PolicyStatements, Replication, Versioning


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
