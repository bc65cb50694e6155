"""The ordered steps of a setup, each with its equivalent `aws` commands (pure): what `plan` prints.

The same keys name the resources that `apply` and `check` work on (resources/),
so the plan, the apply and the check cannot disagree on what there is to do.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import PurePath

from backfill.setup import documents as d
from backfill.setup.model import SetupConfig, Side

# File names of the documents `plan` writes, and what each one is.
DOCUMENTS = {
    "replica-bucket-policy.json": "the replica bucket's grant to the replication role",
    "replication-role-trust-policy.json": "who may assume the replication role: S3",
    "replication-role-permissions-policy.json": "what the role may do: read the source, write replicas",
    "replication-configuration.json": "the source bucket's replication rule",
    "backfill-grant-policy.json": "the temporary read grant for a backfill of existing objects",
    "alert-event-pattern.json": "the CloudTrail events that remove or weaken replication",
    "alert-topic-policy.json": "lets EventBridge publish to the alert topic",
    "alert-targets.json": "the alert rule's target: the topic, with a readable message",
}


# With --source-kms-key / --replica-kms-key: the statements to merge into each key's policy.
KMS_DOCUMENTS = {
    "source-key-policy-statements.json": "merge into the source key's policy: the role and the backfill decrypt",
    "replica-key-policy-statements.json": "merge into the replica key's policy: the role encrypts replicas",
}


def document_names(cfg: SetupConfig) -> dict[str, str]:
    return {**DOCUMENTS, **(KMS_DOCUMENTS if cfg.kms else {})}


def documents(cfg: SetupConfig) -> dict[str, object]:
    docs: dict[str, object] = {
        "replica-bucket-policy.json": d.replica_bucket_policy(cfg),
        "replication-role-trust-policy.json": d.role_trust_policy(),
        "replication-role-permissions-policy.json": d.role_permissions_policy(cfg),
        "replication-configuration.json": d.replication_configuration(cfg),
        "backfill-grant-policy.json": d.backfill_grant_policy(cfg),
        "alert-event-pattern.json": d.alert_event_pattern(cfg),
        "alert-topic-policy.json": d.alert_topic_policy(cfg),
        "alert-targets.json": [d.alert_target(cfg)],
    }
    if cfg.kms:
        docs["source-key-policy-statements.json"] = d.policy(d.source_key_statements(cfg))
        docs["replica-key-policy-statements.json"] = d.policy(d.replica_key_statements(cfg))
    assert set(docs) == set(document_names(cfg))
    return docs


@dataclass(frozen=True, slots=True)
class Step:
    key: str
    title: str
    side: Side
    commands: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _aws(side: Side, *args: str, regional: bool = True) -> list[str]:
    cmd = ["aws", *args]
    if regional:
        cmd += ["--region", side.region]
    if side.profile:
        cmd += ["--profile", side.profile]
    return cmd


def _file(out: str, name: str) -> str:
    return f"file://{PurePath(out, name).as_posix()}"


def _create_bucket(side: Side) -> list[str]:
    args = ["s3api", "create-bucket", "--bucket", side.bucket]
    if side.region != "us-east-1":  # us-east-1 takes no LocationConstraint
        args += ["--create-bucket-configuration", f"LocationConstraint={side.region}"]
    return _aws(side, *args)


def _versioning(side: Side) -> list[str]:
    return _aws(
        side, "s3api", "put-bucket-versioning", "--bucket", side.bucket, "--versioning-configuration", "Status=Enabled"
    )


def apply_steps(cfg: SetupConfig, out: str) -> list[Step]:
    """What `apply` does, in order. The role exists before the replica bucket policy names it
    (S3 refuses a policy whose principal does not exist), and both buckets are versioned
    before the replication rule (S3 refuses the rule otherwise)."""
    src, rep = cfg.source, cfg.replica
    steps = [
        Step(
            "source-bucket",
            f"Create the source bucket {src.bucket} in {src.region}",
            src,
            [_create_bucket(src)],
            ["skipped when it exists and belongs to the source account"],
        ),
        Step("source-versioning", "Enable versioning on the source bucket", src, [_versioning(src)]),
        Step(
            "replica-bucket",
            f"Create the replica bucket {rep.bucket} in {rep.region}",
            rep,
            [_create_bucket(rep)],
            ["skipped when it exists and belongs to the replica account"],
        ),
        Step("replica-versioning", "Enable versioning on the replica bucket", rep, [_versioning(rep)]),
        Step(
            "role",
            f"Create the replication role {cfg.role_name}, which only S3 may assume",
            src,
            [
                _aws(
                    src,
                    "iam",
                    "create-role",
                    "--role-name",
                    cfg.role_name,
                    "--assume-role-policy-document",
                    _file(out, "replication-role-trust-policy.json"),
                    "--description",
                    f"S3 replication of {src.bucket} to {rep.bucket}",
                    regional=False,
                )
            ],
        ),
        Step(
            "policy",
            f"Create its permissions policy {cfg.policy_name}: read the source's versions, write replicas",
            src,
            [
                _aws(
                    src,
                    "iam",
                    "create-policy",
                    "--policy-name",
                    cfg.policy_name,
                    "--policy-document",
                    _file(out, "replication-role-permissions-policy.json"),
                    regional=False,
                )
            ],
        ),
        Step(
            "attachment",
            "Attach the policy to the role",
            src,
            [
                _aws(
                    src,
                    "iam",
                    "attach-role-policy",
                    "--role-name",
                    cfg.role_name,
                    "--policy-arn",
                    cfg.policy_arn,
                    regional=False,
                )
            ],
        ),
        Step(
            "replica-policy",
            "Let that role, and only it, write replicas into the replica bucket",
            rep,
            [
                _aws(
                    rep,
                    "s3api",
                    "put-bucket-policy",
                    "--bucket",
                    rep.bucket,
                    "--policy",
                    _file(out, "replica-bucket-policy.json"),
                )
            ],
            ["put-bucket-policy replaces the bucket's policy; apply adds its statements to an existing one"],
        ),
        Step(
            "replication",
            "Replicate every new version and delete marker to the replica, owned by the replica account",
            src,
            [
                _aws(
                    src,
                    "s3api",
                    "put-bucket-replication",
                    "--bucket",
                    src.bucket,
                    "--replication-configuration",
                    _file(out, "replication-configuration.json"),
                )
            ],
        ),
    ]
    if cfg.mfa_delete:
        side = cfg.side(cfg.mfa_delete)
        steps.append(
            Step(
                "mfa-delete",
                f"Enable MFA Delete on the {side.name} bucket: only the root user of account {side.account} can, "
                "with its MFA device",
                side,
                [
                    _aws(
                        side,
                        "s3api",
                        "put-bucket-versioning",
                        "--bucket",
                        side.bucket,
                        "--versioning-configuration",
                        "Status=Enabled,MFADelete=Enabled",
                        "--mfa",
                        f"arn:{cfg.partition}:iam::{side.account}:mfa/DEVICE CODE",
                    )
                ],
                [
                    f"{side.option('profile')} must hold the root user's credentials; DEVICE is the root user's MFA "
                    "device and CODE its current code; apply takes them as --mfa 'SERIAL CODE'"
                ],
            )
        )
    return steps


def _key_policy_step(side: Side, key: str, doc: str, title: str, out: str) -> Step:
    merged = doc.replace("-statements.json", ".json")
    args = ["--key-id", key, "--policy-name", "default"]
    return Step(
        f"{side.name}-key-policy",
        title,
        side,
        [
            _aws(side, "kms", "get-key-policy", *args, "--query", "Policy", "--output", "text"),
            _aws(side, "kms", "put-key-policy", *args, "--policy", _file(out, merged)),
        ],
        [
            f"by the key's administrator in account {side.account}; apply does not change key policies",
            f"put-key-policy replaces the whole key policy: save what get-key-policy prints as {merged}, add the "
            f"statements of {doc} to its Statement list (keep the others, above all the one that lets the account "
            "administer the key), then put it",
        ],
    )


def kms_steps(cfg: SetupConfig, out: str) -> list[Step]:
    """The key-policy statements to merge on each side (none without the keys)."""
    if not (cfg.source_kms_key and cfg.replica_kms_key):
        return []
    return [
        _key_policy_step(
            cfg.source,
            cfg.source_kms_key,
            "source-key-policy-statements.json",
            f"Let the replication role and {cfg.backfill_principal} decrypt with the source key",
            out,
        ),
        _key_policy_step(
            cfg.replica,
            cfg.replica_kms_key,
            "replica-key-policy-statements.json",
            "Let the replication role encrypt replicas with the replica key",
            out,
        ),
    ]


def backfill_kms_note(cfg: SetupConfig) -> str:
    """What the backfill grant cannot give for SSE-KMS objects."""
    key = f"the source key {cfg.source_kms_key}" if cfg.source_kms_key else "their KMS key"
    return (
        f"SSE-KMS objects: a bucket policy cannot grant KMS; the key policy of {key} must let {cfg.backfill_principal} "
        "kms:Decrypt (and its own IAM policy allow it), and objects under the AWS managed key aws/s3 cannot be "
        "read from another account at all"
    )


def backfill_steps(cfg: SetupConfig, out: str) -> list[Step]:
    src, rep = cfg.source, cfg.replica
    copy = ["backfill", "copy", f"s3://{src.bucket}", f"s3://{rep.bucket}"]
    if rep.profile:
        copy += ["--source-profile", rep.profile, "--dest-profile", rep.profile]
    copy += ["--source-region", src.region, "--dest-region", rep.region]
    return [
        Step(
            "grant-backfill",
            f"Let {cfg.backfill_principal} list and read the source's versions (backfill setup grant-backfill)",
            src,
            [
                _aws(
                    src,
                    "s3api",
                    "put-bucket-policy",
                    "--bucket",
                    src.bucket,
                    "--policy",
                    _file(out, "backfill-grant-policy.json"),
                )
            ],
            ["put-bucket-policy replaces the bucket's policy; grant-backfill adds its one statement to it"]
            + ([backfill_kms_note(cfg)] if cfg.kms else []),
        ),
        Step(
            "copy",
            "Copy every existing version and delete marker into the replica",
            rep,
            [copy],
            [
                "run by the replica account, right after step 9; rerun the same command to resume",
                "versions written after the rule are left to replication; see the README on replication",
            ],
        ),
        Step(
            "revoke-backfill",
            "Remove the grant (backfill setup revoke-backfill)",
            src,
            [_aws(src, "s3api", "delete-bucket-policy", "--bucket", src.bucket)],
            [
                f"only when the grant is the policy's only statement; revoke-backfill removes just "
                f"{d.SID_BACKFILL_GRANT}"
            ],
        ),
    ]


def alert_steps(cfg: SetupConfig, out: str, notify: tuple[str, str] | None = None) -> list[Step]:
    src = cfg.source
    protocol, endpoint = notify or ("email", "EMAIL")
    return [
        Step(
            "alert-topic",
            f"Create the SNS topic {cfg.alert_name}",
            src,
            [_aws(src, "sns", "create-topic", "--name", cfg.alert_name)],
        ),
        Step(
            "alert-topic-policy",
            "Let EventBridge, for this rule only, publish to it",
            src,
            [
                _aws(
                    src,
                    "sns",
                    "set-topic-attributes",
                    "--topic-arn",
                    cfg.topic_arn,
                    "--attribute-name",
                    "Policy",
                    "--attribute-value",
                    _file(out, "alert-topic-policy.json"),
                )
            ],
        ),
        Step(
            "alert-rule",
            f"Match CloudTrail's record of {', '.join(d.ALERT_EVENTS)} on the source bucket",
            src,
            [
                _aws(
                    src,
                    "events",
                    "put-rule",
                    "--name",
                    cfg.alert_name,
                    "--event-pattern",
                    _file(out, "alert-event-pattern.json"),
                    "--state",
                    "ENABLED",
                    "--description",
                    f"Replication of s3://{src.bucket} removed or weakened",
                )
            ],
        ),
        Step(
            "alert-target",
            "Send those events to the topic",
            src,
            [
                _aws(
                    src,
                    "events",
                    "put-targets",
                    "--rule",
                    cfg.alert_name,
                    "--targets",
                    _file(out, "alert-targets.json"),
                )
            ],
        ),
        Step(
            "alert-subscription",
            "Subscribe the address that gets the alerts",
            src,
            [
                _aws(
                    src,
                    "sns",
                    "subscribe",
                    "--topic-arn",
                    cfg.topic_arn,
                    "--protocol",
                    protocol,
                    "--notification-endpoint",
                    endpoint,
                )
            ],
            [] if notify else ["or --protocol https --notification-endpoint https://…; an email address must confirm"],
        ),
    ]


# --- rendering -----------------------------------------------------------------------


def render_command(cmd: list[str]) -> str:
    return shlex.join(cmd)


def _step_lines(n: int, step: Step) -> list[str]:
    who = f"{step.side.name} account {step.side.account}"
    lines = [f"{n:>2}. {step.title}  [{who}]"]
    lines += [f"      {render_command(c)}" for c in step.commands]
    lines += [f"      ({note})" for note in step.notes]
    return lines


def identity_commands(cfg: SetupConfig) -> list[str]:
    lines = []
    for s in (cfg.source, cfg.replica):
        cmd = _aws(s, "sts", "get-caller-identity", "--query", "Account", "--output", "text", regional=False)
        lines.append(f"      {render_command(cmd)}   # must print {s.account}")
    return lines


def header(cfg: SetupConfig) -> str:
    s, r = cfg.source, cfg.replica
    return (
        f"replicate s3://{s.bucket} (account {s.account}, {s.region})\n"
        f"     into s3://{r.bucket} (account {r.account}, {r.region})"
    )


def render_plan(cfg: SetupConfig, out: str) -> str:
    out = PurePath(out).as_posix()
    lines = [header(cfg), "", f"Documents written to {out}/:"]
    names = document_names(cfg)
    width = max(len(n) for n in names)
    lines += [f"  {name:<{width}}  {what}" for name, what in names.items()]
    lines += ["", "First, each profile must act in its own account (apply and check verify it):", ""]
    lines += identity_commands(cfg)
    steps = apply_steps(cfg, out)
    lines += [
        "",
        f"Steps 1–{len(steps)}: `backfill setup apply` runs them in this order; a step already in place is left "
        "unchanged, so apply can be rerun:",
        "",
    ]
    n = 0
    for step in steps:
        n += 1
        lines += _step_lines(n, step)
    keys = kms_steps(cfg, out)
    if keys:
        lines += [
            "",
            "SSE-KMS: each key's policy must also let the role (and the backfill) use it; apply does not change key",
            "policies, so each key's administrator merges the statements written above, once the role exists:",
            "",
        ]
        for step in keys:
            n += 1
            lines += _step_lines(n, step)
    lines += [
        "",
        "Existing objects: replication copies new writes only, so backfill the others once, right after step 9",
        "(the copy leaves the versions written since the rule to replication, and keeps each key's current version):",
        "",
    ]
    for step in backfill_steps(cfg, out):
        n += 1
        lines += _step_lines(n, step)
    lines += [
        "",
        "The alert: `backfill setup alert --notify EMAIL|HTTPS-URL` (and `backfill setup check` reports it missing):",
        "",
    ]
    for step in alert_steps(cfg, out):
        n += 1
        lines += _step_lines(n, step)
    lines += [
        "",
        "EventBridge sees these calls only if CloudTrail records them: the source account needs a trail that",
        f"logs management events (write events at least), multi-region or in {cfg.source.region}.",
    ]
    return "\n".join(lines) + "\n"
