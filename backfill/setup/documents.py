"""Every JSON document `backfill setup` writes, as pure functions of the configuration.

Policies are least privilege: each action is one the reader below needs, on the
one bucket (or its objects) it needs it on; never `s3:*`, never a wildcard
resource. Each statement the tool owns carries its own Sid, so that it can be
merged into a policy that holds other statements and later found, compared or
removed without touching them.
"""

from __future__ import annotations

import json
from typing import Any

from backfill.setup.model import SetupConfig

POLICY_VERSION = "2012-10-17"  # the current policy language; 2008-10-17 lacks policy variables

Doc = dict[str, Any]

# Sids of the statements the tool owns.
SID_REPLICA_OBJECTS = "BackfillReplicationWriteReplicas"
SID_REPLICA_BUCKET = "BackfillReplicationReadVersioning"
SID_BACKFILL_GRANT = "BackfillReadForReplicaAccount"
SID_ALERT_PUBLISH = "BackfillAlertEventBridgePublish"
# Sids of the statements `plan` asks to merge into the KMS key policies (apply does not change key policies).
SID_KEY_REPLICATION_DECRYPT = "BackfillReplicationDecryptSource"
SID_KEY_BACKFILL_DECRYPT = "BackfillReadForReplicaAccountDecrypt"
SID_KEY_REPLICATION_ENCRYPT = "BackfillReplicationEncryptReplicas"

ALERT_TARGET_ID = "backfill-alert-topic"

# The CloudTrail management events that remove or weaken replication of a bucket.
ALERT_EVENTS = (
    "DeleteBucketReplication",
    "PutBucketReplication",
    "PutBucketVersioning",
    "PutBucketPolicy",
    "DeleteBucketPolicy",
)

# What S3 needs to write replicas into a bucket of another account: the replicas,
# delete markers, tags, and (AccessControlTranslation) handing ownership to the replica's owner.
REPLICA_WRITE_ACTIONS = [
    "s3:ReplicateObject",
    "s3:ReplicateDelete",
    "s3:ReplicateTags",
    "s3:ObjectOwnerOverrideToBucketOwner",
]

# What `backfill copy` reads from the source when the replica account runs it:
# HeadBucket and ListObjectsV2 (ListBucket), ListObjectVersions, the Object Lock
# check, and per version HeadObject/GetObject/CopyObject/UploadPartCopy
# (GetObjectVersion), GetObjectTagging (GetObjectVersionTagging), the version's
# ACL, and its retention and legal hold (carried to the replica under Object Lock);
# GetBucketReplication (GetReplicationConfiguration): whether replication already
# owns the versions written after its rule (pipeline/replication.py).
BACKFILL_READ_ACTIONS = [
    "s3:ListBucket",
    "s3:ListBucketVersions",
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetReplicationConfiguration",
    "s3:GetObjectVersion",
    "s3:GetObjectVersionTagging",
    "s3:GetObjectVersionAcl",
    "s3:GetObjectRetention",
    "s3:GetObjectLegalHold",
]


def policy(statements: list[Doc]) -> Doc:
    return {"Version": POLICY_VERSION, "Statement": statements}


# --- SSE-KMS ---------------------------------------------------------------------------
# S3 User Guide, "Replicating encrypted objects (SSE-C, SSE-S3, SSE-KMS, DSSE-KMS)"
# (https://docs.aws.amazon.com/AmazonS3/latest/userguide/replication-config-for-kms-objects.html): the rule opts
# in with SourceSelectionCriteria.SseKmsEncryptedObjects and names the replica's key in
# Destination.EncryptionConfiguration.ReplicaKmsKeyID (a key of the destination's region); the role needs
# kms:Decrypt on the source objects' key and kms:Encrypt on the replica key, plus kms:GenerateDataKey when
# plaintext objects are replicated into a bucket that encrypts with SSE-KMS by default; the guide recommends
# restricting both with kms:ViaService (S3 of that region) and kms:EncryptionContext:aws:s3:arn, which is the
# object's ARN, or the bucket's ARN when an S3 Bucket Key is enabled (both are allowed here). A key of another
# account also needs its key policy to grant the role; AWS managed keys (aws/s3) cannot be shared at all.


def _kms_condition(region: str, bucket_arn: str, partition: str) -> Doc:
    domain = "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com"
    return {
        "StringLike": {
            "kms:ViaService": f"s3.{region}.{domain}",
            "kms:EncryptionContext:aws:s3:arn": [f"{bucket_arn}/*", bucket_arn],
        }
    }


def role_kms_statements(cfg: SetupConfig) -> list[Doc]:
    """The replication role's use of exactly the two keys (none without --source-kms-key)."""
    if not (cfg.source_kms_key and cfg.replica_kms_key):
        return []
    src, rep = cfg.source, cfg.replica
    return [
        {
            "Sid": "DecryptSourceObjects",
            "Effect": "Allow",
            "Action": ["kms:Decrypt"],
            "Resource": cfg.source_kms_key,
            "Condition": _kms_condition(src.region, src.arn, cfg.partition),
        },
        {
            "Sid": "EncryptReplicas",
            "Effect": "Allow",
            "Action": ["kms:Encrypt", "kms:GenerateDataKey"],
            "Resource": cfg.replica_kms_key,
            "Condition": _kms_condition(rep.region, rep.arn, cfg.partition),
        },
    ]


# In a key policy, "Resource": "*" means the key the policy is attached to (AWS KMS Developer Guide, "Key
# policies in AWS KMS"): these statements grant exactly that key.


def source_key_statements(cfg: SetupConfig) -> list[Doc]:
    """What the source key's policy must add: the role's Decrypt (replication), and the backfill principal's
    (a bucket policy cannot grant KMS; its IAM policy in the replica account must allow kms:Decrypt too)."""
    src = cfg.source
    return [
        {
            "Sid": SID_KEY_REPLICATION_DECRYPT,
            "Effect": "Allow",
            "Principal": {"AWS": cfg.role_arn},
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": _kms_condition(src.region, src.arn, cfg.partition),
        },
        {
            "Sid": SID_KEY_BACKFILL_DECRYPT,
            "Effect": "Allow",
            "Principal": {"AWS": cfg.backfill_principal},
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"StringLike": {"kms:EncryptionContext:aws:s3:arn": [f"{src.arn}/*", src.arn]}},
        },
    ]


def replica_key_statements(cfg: SetupConfig) -> list[Doc]:
    """What the replica key's policy must add: the source account's replication role may encrypt replicas."""
    rep = cfg.replica
    return [
        {
            "Sid": SID_KEY_REPLICATION_ENCRYPT,
            "Effect": "Allow",
            "Principal": {"AWS": cfg.role_arn},
            "Action": ["kms:Encrypt", "kms:GenerateDataKey"],
            "Resource": "*",
            "Condition": _kms_condition(rep.region, rep.arn, cfg.partition),
        }
    ]


# --- the replica account ---------------------------------------------------------


def replica_bucket_statements(cfg: SetupConfig) -> list[Doc]:
    """The replica bucket's grant to the source account's replication role (and nobody else)."""
    role = {"AWS": cfg.role_arn}
    return [
        {
            "Sid": SID_REPLICA_OBJECTS,
            "Effect": "Allow",
            "Principal": role,
            "Action": list(REPLICA_WRITE_ACTIONS),
            "Resource": f"{cfg.replica.arn}/*",
        },
        {
            "Sid": SID_REPLICA_BUCKET,
            "Effect": "Allow",
            "Principal": role,
            "Action": ["s3:GetBucketVersioning"],
            "Resource": cfg.replica.arn,
        },
    ]


def replica_bucket_policy(cfg: SetupConfig) -> Doc:
    return policy(replica_bucket_statements(cfg))


# --- the source account: the role S3 assumes to replicate --------------------------


def role_trust_policy() -> Doc:
    return policy([{"Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sts:AssumeRole"}])


def role_permissions_policy(cfg: SetupConfig) -> Doc:
    src, rep = cfg.source.arn, cfg.replica.arn
    return policy(
        [
            {
                "Sid": "ReadSourceBucketReplicationConfiguration",
                "Effect": "Allow",
                "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"],
                "Resource": src,
            },
            {
                "Sid": "ReadSourceObjectVersionsForReplication",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObjectVersionForReplication",
                    "s3:GetObjectVersionAcl",
                    "s3:GetObjectVersionTagging",
                    "s3:GetObjectRetention",
                    "s3:GetObjectLegalHold",
                ],
                "Resource": f"{src}/*",
            },
            {
                "Sid": "ReadReplicaBucketVersioning",
                "Effect": "Allow",
                "Action": ["s3:GetBucketVersioning"],
                "Resource": rep,
            },
            {
                "Sid": "WriteReplicas",
                "Effect": "Allow",
                "Action": list(REPLICA_WRITE_ACTIONS),
                "Resource": f"{rep}/*",
            },
            *role_kms_statements(cfg),
        ]
    )


def replication_rule(cfg: SetupConfig, priority: int = 1) -> Doc:
    """One rule in the current schema (Filter, Priority, DeleteMarkerReplication), for every object; with
    the keys, SSE-KMS objects too (the S3 API's ReplicationRule: SourceSelectionCriteria, and the
    Destination's EncryptionConfiguration.ReplicaKmsKeyID; see the SSE-KMS section above)."""
    rule: Doc = {
        "ID": cfg.rule_id,
        "Priority": priority,
        "Status": "Enabled",
        "Filter": {"Prefix": ""},
        "DeleteMarkerReplication": {"Status": "Enabled"},
        "Destination": {
            "Bucket": cfg.replica.arn,
            "Account": cfg.replica.account,
            "AccessControlTranslation": {"Owner": "Destination"},
        },
    }
    if cfg.source_kms_key and cfg.replica_kms_key:
        rule["SourceSelectionCriteria"] = {"SseKmsEncryptedObjects": {"Status": "Enabled"}}
        rule["Destination"]["EncryptionConfiguration"] = {"ReplicaKmsKeyID": cfg.replica_kms_key}
    return rule


def replication_configuration(cfg: SetupConfig, others: list[Doc] | None = None, priority: int = 1) -> Doc:
    return {"Role": cfg.role_arn, "Rules": [*(others or []), replication_rule(cfg, priority)]}


# --- the source account: the temporary grant for a backfill ------------------------


def backfill_grant_statement(cfg: SetupConfig) -> Doc:
    """Read-only access for the replica account's backfill principal: list versions, read versions."""
    return {
        "Sid": SID_BACKFILL_GRANT,
        "Effect": "Allow",
        "Principal": {"AWS": cfg.backfill_principal},
        "Action": list(BACKFILL_READ_ACTIONS),
        "Resource": [cfg.source.arn, f"{cfg.source.arn}/*"],
    }


def backfill_grant_policy(cfg: SetupConfig) -> Doc:
    return policy([backfill_grant_statement(cfg)])


# --- the source account: the alert ------------------------------------------------


def alert_event_pattern(cfg: SetupConfig) -> Doc:
    """CloudTrail's record of a call that removes or weakens replication of the source bucket."""
    return {
        "source": ["aws.s3"],
        "detail-type": ["AWS API Call via CloudTrail"],
        "detail": {
            "eventSource": ["s3.amazonaws.com"],
            "eventName": list(ALERT_EVENTS),
            "requestParameters": {"bucketName": [cfg.source.bucket]},
        },
    }


def alert_topic_statement(cfg: SetupConfig) -> Doc:
    return {
        "Sid": SID_ALERT_PUBLISH,
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sns:Publish",
        "Resource": cfg.topic_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": cfg.event_rule_arn}},
    }


def alert_topic_policy(cfg: SetupConfig) -> Doc:
    return policy([alert_topic_statement(cfg)])


def alert_target(cfg: SetupConfig) -> Doc:
    """The rule's one target: the topic, with a message a person can read in an email."""
    return {
        "Id": ALERT_TARGET_ID,
        "Arn": cfg.topic_arn,
        "InputTransformer": {
            "InputPathsMap": {
                "time": "$.detail.eventTime",
                "event": "$.detail.eventName",
                "bucket": "$.detail.requestParameters.bucketName",
                "who": "$.detail.userIdentity.arn",
                "account": "$.account",
                "region": "$.region",
            },
            "InputTemplate": (
                '"<time>: <event> on bucket <bucket> (account <account>, <region>) by <who>. '
                'This can remove or weaken its replication to the backup: run backfill setup check."'
            ),
        },
    }


# --- merging and comparing policies --------------------------------------------------


def canonical(value: Any) -> Any:
    """A policy value with the freedoms of the policy language removed: list order, and
    a one-element list written as its element."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        items = sorted((canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
        return items[0] if len(items) == 1 else items
    return value


def same(a: Any, b: Any) -> bool:
    return bool(canonical(a) == canonical(b))


def statements(doc: Doc | None) -> list[Doc]:
    if not doc:
        return []
    st = doc.get("Statement", [])
    return [st] if isinstance(st, dict) else list(st)


def by_sid(doc: Doc | None, sid: str) -> Doc | None:
    return next((s for s in statements(doc) if s.get("Sid") == sid), None)


def with_statements(doc: Doc | None, ours: list[Doc]) -> Doc:
    """`doc` with our statements in place (added, or replacing theirs of the same Sid); the
    other statements are kept as they are, in their order."""
    sids = {s["Sid"] for s in ours}
    kept = [s for s in statements(doc) if s.get("Sid") not in sids]
    out: Doc = {"Version": POLICY_VERSION}
    if doc and doc.get("Id"):
        out["Id"] = doc["Id"]
    out["Statement"] = kept + ours
    return out


def without_statement(doc: Doc | None, sid: str) -> Doc | None:
    """`doc` without the statement `sid`; None when nothing else is left (delete the policy)."""
    kept = [s for s in statements(doc) if s.get("Sid") != sid]
    if not kept:
        return None
    out = dict(doc or {})
    out["Statement"] = kept
    return out


def statement_drift(doc: Doc | None, ours: list[Doc], where: str) -> list[str]:
    """How the live policy `doc` falls short of our statements, one line each."""
    problems = []
    for want in ours:
        have = by_sid(doc, want["Sid"])
        if have is None:
            problems.append(f"statement {want['Sid']} is missing from {where}")
        elif not same(have, want):
            problems.append(f"statement {want['Sid']} in {where} was changed")
    return problems


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
