"""`backfill setup` against a moto server with three accounts and two regions, run as a user runs it.

Accounts act through profiles (AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE in a
temp dir) whose access keys belong to IAM users created in each account, so STS,
IAM, S3, SNS and EventBridge all see the right account (TESTBED.md). Every test
uses its own bucket names, hence its own role, policy and alert names: the moto
server is shared with the other test files.

moto 5.2 stores a replication rule's DeleteMarkerReplication, Filter and
SourceSelectionCriteria but answers GetBucketReplication with hard-coded `Disabled`
and `Prefix ""` and without the criteria; a fixture here makes it answer what it
stored (the fake server is fixed, not our code).

Golden files: tests/golden/setup/; BACKFILL_UPDATE_GOLDEN=1 rewrites them.
"""

from __future__ import annotations

import itertools
import json
import os
import pty
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from backfill.errors import UserError
from backfill.setup import documents as d
from backfill.setup.model import make_config, notify_protocol
from backfill.setup.steps import DOCUMENTS, render_plan
from testbed.faults import Fault
from testbed.proxy import ThreadedProxy
from testbed.store import Run, Store, run_cli

SOURCE, REPLICA, OTHER = "111111111111", "222222222222", "333333333333"
SOURCE_REGION, REPLICA_REGION = "eu-west-1", "eu-central-1"
GOLDEN = Path(__file__).parent / "golden" / "setup"
TUTORIAL = [
    "--source",
    "s3://my-important-data-bucket",
    "--source-account",
    SOURCE,
    "--source-region",
    SOURCE_REGION,
    "--source-profile",
    "master-aws-account",
    "--replica",
    "s3://my-important-data-bucket-replica",
    "--replica-account",
    REPLICA,
    "--replica-region",
    REPLICA_REGION,
    "--replica-profile",
    "backup-aws-account",
]
ADMIN = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
# Everything apply needs in the source account, except creating the role.
LIMITED = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["s3:*", "sts:*", "iam:Get*", "iam:List*"], "Resource": "*"}],
}

_names = itertools.count()


@dataclass
class Aws:
    endpoint: str
    env: dict[str, str]
    keys: dict[str, tuple[str, str]]  # account → (access key, secret) of its administrator

    def client(self, service: str, account: str, region: str = SOURCE_REGION) -> Any:
        key, secret = self.keys[account]
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=Config(s3={"addressing_style": "path"}),
        )

    def setup(self, command: str, src: str, rep: str, *extra: str, **profiles: str) -> Run:
        return run_cli(*self.args(command, src, rep, *extra, **profiles), env=self.env, timeout=120)

    def args(self, command: str, src: str, rep: str, *extra: str, **profiles: str) -> list[str]:
        return [
            "setup",
            command,
            "--source",
            f"s3://{src}",
            "--source-account",
            SOURCE,
            "--source-region",
            SOURCE_REGION,
            "--source-profile",
            profiles.get("source", "master-aws-account"),
            "--replica",
            f"s3://{rep}",
            "--replica-account",
            REPLICA,
            "--replica-region",
            REPLICA_REGION,
            "--replica-profile",
            profiles.get("replica", "backup-aws-account"),
            *extra,
        ]

    def moto_auth(self, no_auth_requests: str) -> None:
        """moto's IAM enforcement: "0" switches it on now, "inf" off again (TESTBED.md). The body must
        not be sent as a form (urllib's default), or moto reads it as empty and fails."""
        req = Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=no_auth_requests.encode(),
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        with urlopen(req) as r:
            assert r.status == 200


def _faithful_get_bucket_replication(self: Any) -> Any:
    """moto's GetBucketReplication, answering the rule's stored DeleteMarkerReplication and Filter."""
    from moto.core.responses import ActionResult
    from moto.s3.exceptions import ReplicationConfigurationNotFoundError

    self.data["Action"] = "GetBucketReplication"
    replication = self.backend.get_bucket_replication(self.bucket_name)
    if not replication:
        raise ReplicationConfigurationNotFoundError(bucket_name=self.bucket_name)
    rules = []
    for rule in replication["Rule"]:
        flt = rule.get("Filter") or {}
        answer = {
            "ID": rule["ID"],
            "Priority": rule["Priority"],
            "Status": rule["Status"],
            "DeleteMarkerReplication": rule.get("DeleteMarkerReplication") or {"Status": "Disabled"},
            "Filter": {k: v or "" for k, v in flt.items()} if isinstance(flt, dict) else {"Prefix": ""},
            "Destination": rule["Destination"],
        }
        if rule.get("SourceSelectionCriteria"):
            answer["SourceSelectionCriteria"] = rule["SourceSelectionCriteria"]
        rules.append(answer)
    return self.serialized(ActionResult({"ReplicationConfiguration": {"Role": replication["Role"], "Rules": rules}}))


@pytest.fixture(scope="module")
def aws(moto: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aws]:
    from moto.s3.responses import S3Response

    home = tmp_path_factory.mktemp("aws")
    keys: dict[str, tuple[str, str]] = {}
    credentials, config = [], []
    run = f"{os.getpid()}-{next(_names)}"
    for profile, account, user, doc in (
        ("master-aws-account", SOURCE, "admin", ADMIN),
        ("backup-aws-account", REPLICA, "admin", ADMIN),
        ("intruder", OTHER, "admin", ADMIN),
        ("limited", SOURCE, "limited", LIMITED),
    ):
        iam = boto3.client(
            "iam", endpoint_url=moto.endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )

        def in_account(request: Any, account: str = account, **_: Any) -> None:
            request.headers["x-moto-account-id"] = account

        iam.meta.events.register("before-sign.*.*", in_account)
        name = f"setup-{user}-{run}"
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="access", PolicyDocument=json.dumps(doc))
        k = iam.create_access_key(UserName=name)["AccessKey"]
        if user == "admin":
            keys[account] = (k["AccessKeyId"], k["SecretAccessKey"])
        credentials.append(
            f"[{profile}]\naws_access_key_id = {k['AccessKeyId']}\naws_secret_access_key = {k['SecretAccessKey']}\n"
        )
        config.append(f"[profile {profile}]\nregion = us-east-1\n")
    (home / "credentials").write_text("\n".join(credentials))
    (home / "config").write_text("\n".join(config))
    env = {
        "AWS_ENDPOINT_URL": moto.endpoint,
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(S3Response, "get_bucket_replication", _faithful_get_bucket_replication)
        yield Aws(moto.endpoint, env, keys)


def pair() -> tuple[str, str]:
    n = f"{os.getpid()}-{next(_names)}"
    return f"setup-src-{n}", f"setup-rep-{n}"


def steps(out: str) -> dict[int, str]:
    """Step number → status, from apply's or alert's output lines ` 3. what: status (why)`."""
    found = {}
    for line in out.splitlines():
        m = re.match(r"^\s*(\d+)\. .*: (created|updated|unchanged)( \(.*\))?$", line)
        if m:
            found[int(m.group(1))] = m.group(2)
    return found


def one_line_error(r: Run) -> str:
    assert r.code == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("backfill: error: ") and r.stderr.count("\n") == 1, r.stderr
    return r.stderr


def drifts(out: str) -> list[str]:
    return [line.split("DRIFT", 1)[1].strip() for line in out.splitlines() if line.lstrip().startswith("DRIFT")]


def exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        return False
    return True


def bucket_policy(s3: Any, bucket: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"]))
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchBucketPolicy"
        return None


SOURCE_KEY = f"arn:aws:kms:{SOURCE_REGION}:{SOURCE}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
REPLICA_KEY = f"arn:aws:kms:{REPLICA_REGION}:{REPLICA}:key/0987dcba-09ba-87dc-65fe-ba0987654321"
KEYS = ["--source-kms-key", SOURCE_KEY, "--replica-kms-key", REPLICA_KEY]


def tutorial_config(**extra: Any) -> Any:
    return make_config(
        source="s3://my-important-data-bucket",
        source_account=SOURCE,
        source_region=SOURCE_REGION,
        source_profile="master-aws-account",
        replica="s3://my-important-data-bucket-replica",
        replica_account=REPLICA,
        replica_region=REPLICA_REGION,
        replica_profile="backup-aws-account",
        **extra,
    )


def kms_statements(cfg: Any, source_key: str, replica_key: str) -> list[dict[str, Any]]:
    """The role's KMS statements, written out: Decrypt on exactly the source key, Encrypt and GenerateDataKey
    on exactly the replica key, each only through S3 of its bucket's region and for that bucket's objects
    (S3 User Guide, "Replicating encrypted objects": the conditions it recommends)."""
    src, rep = cfg.source.bucket, cfg.replica.bucket
    return [
        {
            "Sid": "DecryptSourceObjects",
            "Effect": "Allow",
            "Action": ["kms:Decrypt"],
            "Resource": source_key,
            "Condition": {
                "StringLike": {
                    "kms:ViaService": f"s3.{SOURCE_REGION}.amazonaws.com",
                    "kms:EncryptionContext:aws:s3:arn": [f"arn:aws:s3:::{src}/*", f"arn:aws:s3:::{src}"],
                }
            },
        },
        {
            "Sid": "EncryptReplicas",
            "Effect": "Allow",
            "Action": ["kms:Encrypt", "kms:GenerateDataKey"],
            "Resource": replica_key,
            "Condition": {
                "StringLike": {
                    "kms:ViaService": f"s3.{REPLICA_REGION}.amazonaws.com",
                    "kms:EncryptionContext:aws:s3:arn": [f"arn:aws:s3:::{rep}/*", f"arn:aws:s3:::{rep}"],
                }
            },
        },
    ]


# --- plan: no AWS at all ---------------------------------------------------------------


def _golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("BACKFILL_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert actual == path.read_text(encoding="utf-8"), f"{name} differs from {path}"


def test_plan_matches_golden_files(tmp_path: Path) -> None:
    # No credentials and no endpoint: any AWS request would fail, so plan makes none.
    r = run_cli("setup", "plan", *TUTORIAL, "--out", "plan", env={}, cwd=tmp_path)
    assert r.code == 0, r.stderr
    _golden("plan.txt", r.stdout)
    written = sorted(p.name for p in (tmp_path / "plan").iterdir())
    assert written == sorted(DOCUMENTS)
    for name in written:
        text = (tmp_path / "plan" / name).read_text(encoding="utf-8")
        json.loads(text)
        _golden(name, text)


def test_plan_with_kms_keys_matches_golden_files(tmp_path: Path) -> None:
    """With --source-kms-key/--replica-kms-key the rule replicates SSE-KMS objects into the replica key, the
    role may use exactly those keys, and plan writes (and prints the steps for) the key-policy statements each
    side's key administrator merges; the documents that do not involve KMS are the same as without keys."""
    r = run_cli("setup", "plan", *TUTORIAL, *KEYS, "--out", "plan", env={}, cwd=tmp_path)
    assert r.code == 0, r.stderr
    _golden("kms/plan.txt", r.stdout)
    kms_docs = {
        "replication-configuration.json",
        "replication-role-permissions-policy.json",
        "source-key-policy-statements.json",
        "replica-key-policy-statements.json",
    }
    written = sorted(p.name for p in (tmp_path / "plan").iterdir())
    assert set(written) == set(DOCUMENTS) | kms_docs
    for name in written:
        text = (tmp_path / "plan" / name).read_text(encoding="utf-8")
        if name in kms_docs:
            _golden(f"kms/{name}", text)
        else:
            assert text == (GOLDEN / name).read_text(encoding="utf-8"), name
    assert "put-key-policy replaces the whole key policy" in r.stdout
    assert "a bucket policy cannot grant KMS" in r.stdout and "aws/s3" in r.stdout


def test_kms_documents_grant_exactly_the_two_keys() -> None:
    cfg = tutorial_config(source_kms_key=SOURCE_KEY, replica_kms_key=REPLICA_KEY)
    (rule,) = d.replication_configuration(cfg)["Rules"]
    assert rule["SourceSelectionCriteria"] == {"SseKmsEncryptedObjects": {"Status": "Enabled"}}
    assert rule["Destination"]["EncryptionConfiguration"] == {"ReplicaKmsKeyID": REPLICA_KEY}
    role = d.statements(d.role_permissions_policy(cfg))
    kms = [st for st in role if any(a.startswith("kms:") for a in st["Action"])]
    assert kms == kms_statements(cfg, SOURCE_KEY, REPLICA_KEY)
    # The key policies: the role's Decrypt and the backfill principal's on the source key, the role's
    # Encrypt/GenerateDataKey on the replica key; "*" in a key policy is that key.
    source_key, replica_key = d.source_key_statements(cfg), d.replica_key_statements(cfg)
    assert [(st["Principal"], st["Action"]) for st in source_key] == [
        ({"AWS": cfg.role_arn}, "kms:Decrypt"),
        ({"AWS": f"arn:aws:iam::{REPLICA}:root"}, "kms:Decrypt"),
    ]
    assert [(st["Principal"], st["Action"]) for st in replica_key] == [
        ({"AWS": cfg.role_arn}, ["kms:Encrypt", "kms:GenerateDataKey"])
    ]
    # Without the keys nothing of this is there.
    plain = tutorial_config()
    assert "SourceSelectionCriteria" not in d.replication_configuration(plain)["Rules"][0]
    assert not [st for st in d.statements(d.role_permissions_policy(plain)) if "kms:Decrypt" in st["Action"]]


def test_plan_with_mfa_delete_says_it_needs_the_root_user(tmp_path: Path) -> None:
    r = run_cli("setup", "plan", *TUTORIAL, "--out", "p", "--mfa-delete", "replica", env={}, cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert (
        "10. Enable MFA Delete on the replica bucket: only the root user of account 222222222222 can, with its "
        "MFA device  [replica account 222222222222]\n"
        "      aws s3api put-bucket-versioning --bucket my-important-data-bucket-replica --versioning-configuration "
        "Status=Enabled,MFADelete=Enabled --mfa 'arn:aws:iam::222222222222:mfa/DEVICE CODE' --region eu-central-1 "
        "--profile backup-aws-account\n"
    ) in r.stdout
    assert "Steps 1–10:" in r.stdout


def test_plan_commands_survive_a_shell() -> None:
    text = render_plan(tutorial_config(), "my plans/")
    assert "Documents written to my plans/:" in text
    commands = [shlex.split(line, comments=True) for line in text.splitlines() if line.startswith("      aws ")]
    assert len(commands) == 2 + 9 + 2 + 5  # identities, apply, grant and revoke, alert
    policy = next(c for c in commands if c[2] == "put-bucket-policy" and "my-important-data-bucket-replica" in c)
    assert policy[policy.index("--policy") + 1] == "file://my plans/replica-bucket-policy.json"
    assert all(c[-2:] in (["--profile", "master-aws-account"], ["--profile", "backup-aws-account"]) for c in commands)


def test_documents_fix_the_tutorial_and_grant_least_privilege() -> None:
    cfg = tutorial_config()
    src, rep = "arn:aws:s3:::my-important-data-bucket", "arn:aws:s3:::my-important-data-bucket-replica"
    repl = d.replication_configuration(cfg)
    (rule,) = repl["Rules"]
    # The tutorial's rule pointed at the source bucket, and its role lived in a third account.
    assert rule["Destination"] == {
        "Bucket": rep,
        "Account": REPLICA,
        "AccessControlTranslation": {"Owner": "Destination"},
    }
    assert repl["Role"] == f"arn:aws:iam::{SOURCE}:role/backfill-replication-my-important-data-bucket"
    assert cfg.policy_arn.startswith(f"arn:aws:iam::{SOURCE}:policy/")
    assert (rule["Filter"], rule["Priority"], rule["DeleteMarkerReplication"]) == (
        {"Prefix": ""},
        1,
        {"Status": "Enabled"},
    )
    policies = [
        d.replica_bucket_policy(cfg),
        d.role_permissions_policy(cfg),
        d.backfill_grant_policy(cfg),
        d.alert_topic_policy(cfg),
        d.role_trust_policy(),
    ]
    allowed = {src, f"{src}/*", rep, f"{rep}/*", cfg.topic_arn}
    for doc in policies:
        assert doc["Version"] == "2012-10-17"  # never the tutorial's 2008-10-17
        for st in d.statements(doc):
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            assert all("*" not in a for a in actions), st
            resources = st.get("Resource", [])
            assert set(resources if isinstance(resources, list) else [resources]) <= allowed, st
    # The replica accepts replicas from the replication role only, not from the whole source account.
    assert {json.dumps(s["Principal"]) for s in d.statements(d.replica_bucket_policy(cfg))} == {
        json.dumps({"AWS": repl["Role"]})
    }
    # Only the replica account, only reads.
    (grant,) = d.statements(d.backfill_grant_policy(cfg))
    assert grant["Principal"] == {"AWS": f"arn:aws:iam::{REPLICA}:root"}
    assert all(a.startswith(("s3:Get", "s3:List")) for a in grant["Action"])
    assert {
        "s3:ListBucketVersions",
        "s3:GetObjectVersion",
        "s3:GetObjectVersionTagging",
        "s3:GetObjectVersionAcl",
        "s3:GetReplicationConfiguration",  # copy reads whether replication owns the newer versions
    } <= set(grant["Action"])
    pattern = d.alert_event_pattern(cfg)
    assert pattern["detail"]["eventName"] == list(d.ALERT_EVENTS)
    assert pattern["detail"]["requestParameters"] == {"bucketName": ["my-important-data-bucket"]}


def _cloudtrail_event(event_name: str, bucket: str, source: str = "aws.s3") -> Any:
    """An "AWS API Call via CloudTrail" event as EventBridge delivers it (only the fields that matter)."""
    return {
        "version": "0",
        "id": "6f8b9c1e-0000-0000-0000-000000000000",
        "detail-type": "AWS API Call via CloudTrail",
        "source": source,
        "account": SOURCE,
        "time": "2026-11-25T12:00:00Z",
        "region": SOURCE_REGION,
        "resources": [],
        "detail": {
            "eventVersion": "1.09",
            "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{SOURCE}:user/mallory"},
            "eventTime": "2026-11-25T12:00:00Z",
            "eventSource": "s3.amazonaws.com",
            "eventName": event_name,
            "awsRegion": SOURCE_REGION,
            "requestParameters": {"bucketName": bucket, "Host": f"{bucket}.s3.{SOURCE_REGION}.amazonaws.com"},
        },
    }


def test_alert_matches_the_calls_that_weaken_replication_and_says_who() -> None:
    # moto's implementation of EventBridge's matching and input transformation is the oracle here.
    from moto.events.models import EventPattern
    from moto.events.utils import EventTemplateParser

    cfg = tutorial_config()
    pattern = EventPattern.load(json.dumps(d.alert_event_pattern(cfg)))
    bucket = "my-important-data-bucket"
    for name in d.ALERT_EVENTS:
        assert pattern.matches_event(_cloudtrail_event(name, bucket)), name
    assert not pattern.matches_event(_cloudtrail_event("PutObject", bucket))
    assert not pattern.matches_event(_cloudtrail_event("DeleteBucketReplication", "some-other-bucket"))
    assert not pattern.matches_event(_cloudtrail_event("DeleteBucketReplication", bucket, source="aws.ec2"))
    transformer = d.alert_target(cfg)["InputTransformer"]
    event: Any = {**_cloudtrail_event("DeleteBucketReplication", bucket), "ingestion-time": "2026-11-25T12:00:01Z"}
    message: Any = EventTemplateParser.parse(transformer["InputTemplate"], transformer["InputPathsMap"], event)
    assert message == (
        f"2026-11-25T12:00:00Z: DeleteBucketReplication on bucket {bucket} (account {SOURCE}, {SOURCE_REGION}) "
        f"by arn:aws:iam::{SOURCE}:user/mallory. This can remove or weaken its replication to the backup: "
        "run backfill setup check."
    )


def test_policy_merging_keeps_other_statements() -> None:
    theirs = {"Sid": "Theirs", "Effect": "Deny", "Principal": "*", "Action": "s3:DeleteBucket", "Resource": "x"}
    old_ours = {
        "Sid": "Ours",
        "Effect": "Allow",
        "Principal": {"AWS": "a"},
        "Action": ["s3:GetObject"],
        "Resource": "y",
    }
    new_ours = {**old_ours, "Action": ["s3:GetObjectVersion", "s3:ListBucket"]}
    doc = {"Version": "2008-10-17", "Id": "P", "Statement": [theirs, old_ours]}
    merged = d.with_statements(doc, [new_ours])
    assert merged == {"Version": "2012-10-17", "Id": "P", "Statement": [theirs, new_ours]}
    assert d.statement_drift(doc, [new_ours], "p") == ["statement Ours in p was changed"]
    assert d.statement_drift(merged, [new_ours], "p") == []
    # Order within lists, and "x" for ["x"], are the policy language's freedoms, not drift.
    shuffled = {**new_ours, "Action": ["s3:ListBucket", "s3:GetObjectVersion"], "Principal": {"AWS": ["a"]}}
    assert d.statement_drift({"Statement": [shuffled]}, [new_ours], "p") == []
    assert d.without_statement(merged, "Ours") == {"Version": "2012-10-17", "Id": "P", "Statement": [theirs]}
    assert d.without_statement({"Statement": [new_ours]}, "Ours") is None


def test_options_are_validated() -> None:
    base: dict[str, Any] = {
        "source": "s3://a-source",
        "source_account": SOURCE,
        "source_region": SOURCE_REGION,
        "source_profile": None,
        "replica": "s3://a-replica",
        "replica_account": REPLICA,
        "replica_region": REPLICA_REGION,
        "replica_profile": None,
    }
    assert make_config(**base).backfill_principal == f"arn:aws:iam::{REPLICA}:root"
    long = make_config(**{**base, "source": "s3://" + "b" * 63})
    assert len(long.role_name) == 64 and len(long.alert_name) <= 64
    assert long.role_name == make_config(**{**base, "source": "s3://" + "b" * 63}).role_name
    for change, message in (
        ({"source": "s3://a-source/prefix"}, "whole bucket"),
        ({"source_account": "1111"}, "12 digits"),
        ({"replica_region": "Frankfurt"}, "not an AWS region"),
        ({"replica": "s3://a-source"}, "same bucket"),
        ({"replica_region": "cn-north-1"}, "partitions"),
        ({"backfill_principal": f"arn:aws:iam::{OTHER}:root"}, "not in the replica account"),
        ({"mfa_delete": "both"}, "--mfa-delete"),
        ({"source_kms_key": SOURCE_KEY.replace("111111111111", SOURCE)}, "go together"),
        ({"source_kms_key": "alias/aws/s3", "replica_kms_key": "alias/backup"}, "full ARN"),
        (
            {"source_kms_key": SOURCE_KEY.replace(SOURCE, OTHER), "replica_kms_key": REPLICA_KEY},
            "must be in its account",
        ),
        (
            {"source_kms_key": SOURCE_KEY, "replica_kms_key": REPLICA_KEY.replace(REPLICA_REGION, SOURCE_REGION)},
            "must be in its account 222222222222 and region eu-central-1",
        ),
    ):
        with pytest.raises(UserError, match=message):
            make_config(**{**base, **change})
    assert notify_protocol("ops@example.com") == ("email", "ops@example.com")
    assert notify_protocol("https://hooks.example.com/x") == ("https", "https://hooks.example.com/x")
    for bad in ("http://hooks.example.com/x", "ops", "https://"):
        with pytest.raises(UserError, match="--notify"):
            notify_protocol(bad)


# --- against moto: two accounts, two regions --------------------------------------------


def test_apply_creates_everything_and_a_second_apply_changes_nothing(aws: Aws) -> None:
    src, rep = pair()
    role_arn = f"arn:aws:iam::{SOURCE}:role/backfill-replication-{src}"
    s3_src = aws.client("s3", SOURCE, SOURCE_REGION)
    s3_rep = aws.client("s3", REPLICA, REPLICA_REGION)
    # The replica bucket exists already, with a policy of its own that must survive.
    s3_rep.create_bucket(Bucket=rep, CreateBucketConfiguration={"LocationConstraint": REPLICA_REGION})
    theirs = {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{rep}/*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    s3_rep.put_bucket_policy(Bucket=rep, Policy=json.dumps({"Version": "2012-10-17", "Statement": [theirs]}))

    r = aws.setup("apply", src, rep, "--yes")
    assert r.code == 0, r.stderr
    assert steps(r.stdout) == {
        1: "created",
        2: "updated",
        3: "unchanged",
        4: "updated",
        5: "created",
        6: "created",
        7: "created",
        8: "created",
        9: "created",
    }, r.stdout

    # Both buckets, in their accounts and regions, versioned.
    assert src in {b["Name"] for b in s3_src.list_buckets()["Buckets"]}
    assert s3_src.get_bucket_location(Bucket=src)["LocationConstraint"] == SOURCE_REGION
    assert s3_src.get_bucket_versioning(Bucket=src)["Status"] == "Enabled"
    assert s3_rep.get_bucket_versioning(Bucket=rep)["Status"] == "Enabled"
    # The role, in the source account, trusted by S3 only, with its policy attached.
    iam = aws.client("iam", SOURCE)
    role = iam.get_role(RoleName=f"backfill-replication-{src}")["Role"]
    assert role["Arn"] == role_arn
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "s3.amazonaws.com"}
    attached = iam.list_attached_role_policies(RoleName=f"backfill-replication-{src}")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [f"arn:aws:iam::{SOURCE}:policy/backfill-replication-{src}"]
    # The replica bucket policy: theirs kept, ours added for the role.
    pol = bucket_policy(s3_rep, rep)
    assert pol is not None and pol["Statement"][0] == theirs
    ours = {s["Sid"]: s for s in pol["Statement"][1:]}
    assert set(ours) == {d.SID_REPLICA_OBJECTS, d.SID_REPLICA_BUCKET}
    assert ours[d.SID_REPLICA_OBJECTS]["Principal"] == {"AWS": role_arn}
    assert "s3:ObjectOwnerOverrideToBucketOwner" in ours[d.SID_REPLICA_OBJECTS]["Action"]
    # The replication configuration, current schema, pointing at the replica.
    repl = s3_src.get_bucket_replication(Bucket=src)["ReplicationConfiguration"]
    assert repl["Role"] == role_arn
    (rule,) = repl["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["DeleteMarkerReplication"] == {"Status": "Enabled"}
    assert rule["Destination"] == {
        "Bucket": f"arn:aws:s3:::{rep}",
        "Account": REPLICA,
        "AccessControlTranslation": {"Owner": "Destination"},
    }

    again = aws.setup("apply", src, rep, "--yes")
    assert again.code == 0, again.stderr
    assert steps(again.stdout) == dict.fromkeys(range(1, 10), "unchanged"), again.stdout
    assert bucket_policy(s3_rep, rep) == pol


def test_check_reports_drift_and_a_missing_alert(aws: Aws) -> None:
    src, rep = pair()
    assert aws.setup("apply", src, rep, "--yes").code == 0

    r = aws.setup("check", src, rep)
    assert r.code == 1, r.stderr
    assert drifts(r.stdout) and all("alert" in line for line in drifts(r.stdout)), r.stdout
    assert any(f"EventBridge rule backfill-replication-alert-{src} does not exist" in x for x in drifts(r.stdout))

    r = aws.setup("alert", src, rep, "--notify", "ops@example.com")
    assert r.code == 0, r.stderr
    assert steps(r.stdout) == dict.fromkeys(range(1, 6), "created"), r.stdout
    assert "CloudTrail" in r.stdout
    events = aws.client("events", SOURCE)
    rule = events.describe_rule(Name=f"backfill-replication-alert-{src}")
    assert rule["State"] == "ENABLED"
    pattern = json.loads(rule["EventPattern"])
    assert pattern["detail"]["eventName"] == list(d.ALERT_EVENTS)
    assert pattern["detail"]["requestParameters"]["bucketName"] == [src]
    topic = f"arn:aws:sns:{SOURCE_REGION}:{SOURCE}:backfill-replication-alert-{src}"
    (target,) = events.list_targets_by_rule(Rule=f"backfill-replication-alert-{src}")["Targets"]
    assert target["Arn"] == topic
    sns = aws.client("sns", SOURCE)
    topic_policy = json.loads(sns.get_topic_attributes(TopicArn=topic)["Attributes"]["Policy"])
    publish = d.by_sid(topic_policy, d.SID_ALERT_PUBLISH)
    assert publish is not None and publish["Principal"] == {"Service": "events.amazonaws.com"}
    subs = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subs] == [("email", "ops@example.com")]

    r = aws.setup("alert", src, rep, "--notify", "ops@example.com")
    assert steps(r.stdout) == dict.fromkeys(range(1, 6), "unchanged"), r.stdout
    r = aws.setup("alert", src, rep, "--notify", "https://hooks.example.com/backup")
    assert steps(r.stdout) == {**dict.fromkeys(range(1, 5), "unchanged"), 5: "created"}, r.stdout
    assert len(sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]) == 2

    r = aws.setup("check", src, rep)
    assert (r.code, drifts(r.stdout)) == (0, []), r.stdout
    assert r.stdout.rstrip().endswith("healthy")

    # Someone removes the replication and suspends the replica's versioning.
    aws.client("s3", SOURCE).delete_bucket_replication(Bucket=src)
    aws.client("s3", REPLICA, REPLICA_REGION).put_bucket_versioning(
        Bucket=rep, VersioningConfiguration={"Status": "Suspended"}
    )
    r = aws.setup("check", src, rep)
    assert r.code == 1, r.stderr
    assert drifts(r.stdout) == [
        f"versioning is suspended on the replica bucket {rep}",
        f"the source bucket {src} has no replication configuration",
    ], r.stdout

    r = aws.setup("apply", src, rep, "--yes")
    assert (steps(r.stdout)[4], steps(r.stdout)[9]) == ("updated", "created"), r.stdout
    assert aws.setup("check", src, rep).code == 0

    # A rule pointed elsewhere is named as such.
    s3 = aws.client("s3", SOURCE)
    repl = s3.get_bucket_replication(Bucket=src)["ReplicationConfiguration"]
    repl["Rules"][0]["Destination"]["Bucket"] = f"arn:aws:s3:::{src}"  # the tutorial's mistake
    s3.put_bucket_replication(Bucket=src, ReplicationConfiguration=repl)
    r = aws.setup("check", src, rep)
    assert r.code == 1
    assert drifts(r.stdout) == [
        f"the replication rule backfill-to-{rep} points at arn:aws:s3:::{src}, not the replica arn:aws:s3:::{rep}"
    ], r.stdout


def test_grant_and_revoke_keep_other_statements(aws: Aws) -> None:
    src, rep = pair()
    s3 = aws.client("s3", SOURCE)
    s3.create_bucket(Bucket=src, CreateBucketConfiguration={"LocationConstraint": SOURCE_REGION})
    keep = {
        "Sid": "KeepMe",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:DeleteObjectVersion",
        "Resource": f"arn:aws:s3:::{src}/*",
    }
    original = {"Version": "2012-10-17", "Id": "Theirs", "Statement": [keep]}
    s3.put_bucket_policy(Bucket=src, Policy=json.dumps(original))

    r = aws.setup("grant-backfill", src, rep)
    assert r.code == 0, r.stderr
    assert f"grant {d.SID_BACKFILL_GRANT} in the policy of s3://{src}: created" in r.stdout
    pol = bucket_policy(s3, src)
    assert pol is not None and pol["Statement"][0] == keep and pol["Id"] == "Theirs"
    grant = d.by_sid(pol, d.SID_BACKFILL_GRANT)
    assert grant is not None and len(pol["Statement"]) == 2
    assert grant["Principal"] == {"AWS": f"arn:aws:iam::{REPLICA}:root"}
    assert grant["Resource"] == [f"arn:aws:s3:::{src}", f"arn:aws:s3:::{src}/*"]
    assert "s3:*" not in grant["Action"] and "s3:ListBucketVersions" in grant["Action"]
    assert "backfill copy" in r.stdout

    assert ": unchanged" in aws.setup("grant-backfill", src, rep).stdout
    r = aws.setup("revoke-backfill", src, rep)
    assert (r.code, "removed (other statements kept)" in r.stdout) == (0, True), r.stdout
    assert bucket_policy(s3, src) == original
    assert "unchanged (there is none)" in aws.setup("revoke-backfill", src, rep).stdout

    # A named principal, on a bucket without a policy: the grant makes the policy, the revoke deletes it.
    s3.delete_bucket_policy(Bucket=src)
    who = f"arn:aws:iam::{REPLICA}:role/backfill"
    assert aws.setup("grant-backfill", src, rep, "--backfill-principal", who).code == 0
    pol = bucket_policy(s3, src)
    assert pol is not None and [s["Principal"] for s in pol["Statement"]] == [{"AWS": who}]
    r = aws.setup("revoke-backfill", src, rep, "--backfill-principal", who)
    assert "the policy was deleted" in r.stdout, r.stdout
    assert bucket_policy(s3, src) is None


def test_a_profile_in_the_wrong_account_is_refused(aws: Aws) -> None:
    src, rep = pair()
    for command, profiles in (
        ("apply", {"source": "intruder"}),
        ("check", {"replica": "intruder"}),
        ("grant-backfill", {"source": "intruder"}),
    ):
        err = one_line_error(aws.setup(command, src, rep, *(["--yes"] if command == "apply" else []), **profiles))
        assert OTHER in err and ("intruder" in err), err
        assert (SOURCE if "source" in profiles else REPLICA) in err, err
    assert not exists(aws.client("s3", SOURCE), src)


def test_a_bucket_of_another_account_stops_apply_and_says_what_was_done(aws: Aws) -> None:
    src, rep = pair()
    aws.client("s3", OTHER, REPLICA_REGION).create_bucket(
        Bucket=rep, CreateBucketConfiguration={"LocationConstraint": REPLICA_REGION}
    )
    r = aws.setup("apply", src, rep, "--yes")
    err = one_line_error(r)
    assert f"apply stopped at step 3 (replica bucket {rep}" in err, err
    assert f"belongs to another AWS account, not to {REPLICA}" in err, err
    assert "steps 1–2 are done, steps 3–9 are not" in err, err
    assert steps(r.stdout) == {1: "created", 2: "updated"}, r.stdout
    assert bucket_policy(aws.client("s3", OTHER, REPLICA_REGION), rep) is None


def test_setup_s3_requests_are_retried_by_the_products_retry_path(aws: Aws) -> None:
    """setup's S3 client comes from the one client factory (botocore's retries off): throttled and failed answers
    (503 SlowDown, 500 InternalError, neither carried out) are retried by pacing.Pacer, and apply completes."""
    src, rep = pair()
    faults = [
        Fault("slowdown", 1.0, op="HeadBucket", limit=2),
        Fault("internal_error", 1.0, op="PutBucketVersioning", limit=1),
        Fault("slowdown", 1.0, op="GetBucketPolicy", limit=1),
    ]
    with ThreadedProxy(aws.endpoint, faults=faults, seed=1) as proxy:
        r = run_cli(*aws.args("apply", src, rep, "--yes"), env={**aws.env, "AWS_ENDPOINT_URL": proxy.endpoint_url})
        stats = proxy.stats
    assert r.code == 0, (r.stdout, r.stderr)
    assert stats.get("slowdown:HeadBucket") == 2 and stats.get("internal_error:PutBucketVersioning") == 1, stats
    assert stats.get("slowdown:GetBucketPolicy") == 1, stats
    for bucket, account, region in ((src, SOURCE, SOURCE_REGION), (rep, REPLICA, REPLICA_REGION)):
        versioning = aws.client("s3", account, region).get_bucket_versioning(Bucket=bucket)
        assert versioning.get("Status") == "Enabled"


def test_a_missing_permission_is_one_line(aws: Aws) -> None:
    src, rep = pair()
    aws.moto_auth("0")
    try:
        r = aws.setup("apply", src, rep, "--yes", source="limited")
    finally:
        aws.moto_auth("inf")
    err = one_line_error(r)
    assert "may not iam:CreateRole" in err and "profile limited" in err, err
    assert "steps 1–4 are done, steps 5–9 are not" in err, err


def test_apply_asks_first_and_refuses_without_a_terminal(aws: Aws) -> None:
    src, rep = pair()
    err = one_line_error(aws.setup("apply", src, rep))
    assert "--yes" in err
    err = one_line_error(
        aws.setup(
            "apply", src, rep, "--yes", "--mfa-delete", "replica", "--mfa", f"arn:aws:iam::{REPLICA}:mfa/x 123456"
        )
    )
    assert f"root user of account {REPLICA}" in err, err
    assert not exists(aws.client("s3", SOURCE), src)


def test_apply_without_yes_shows_the_steps_and_asks_on_a_terminal(aws: Aws) -> None:
    src, rep = pair()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **aws.env}

    def answer(text: str) -> subprocess.CompletedProcess[str]:
        terminal, stdin = pty.openpty()
        try:
            os.write(terminal, text.encode())
            return subprocess.run(
                [sys.executable, "-m", "backfill", *aws.args("apply", src, rep)],
                stdin=stdin,
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                check=False,
            )
        finally:
            os.close(stdin)
            os.close(terminal)

    no = answer("n\n")
    assert (no.returncode, no.stderr) == (1, "nothing changed\n"), no.stderr
    assert " 9. Replicate every new version and delete marker to the replica" in no.stdout
    assert "Run these 9 steps (each is skipped when already in place)? [y/N]" in no.stdout
    assert not exists(aws.client("s3", SOURCE), src)
    yes = answer("y\n")
    assert yes.returncode == 0, yes.stderr
    assert steps(yes.stdout)[9] == "created", yes.stdout


def test_a_locked_source_gets_a_replica_with_object_lock(aws: Aws) -> None:
    """S3 keeps a version's retention only in a bucket with Object Lock, and replication from a locked source
    needs Object Lock on the destination (DstBucketObjectLockConfigMissing): apply creates the replica with
    it, and check reports an existing replica without it (moto implements Object Lock)."""
    src, rep = pair()
    s3_src = aws.client("s3", SOURCE, SOURCE_REGION)
    s3_src.create_bucket(
        Bucket=src, CreateBucketConfiguration={"LocationConstraint": SOURCE_REGION}, ObjectLockEnabledForBucket=True
    )
    r = aws.setup("apply", src, rep, "--yes")
    assert r.code == 0, r.stderr
    s3_rep = aws.client("s3", REPLICA, REPLICA_REGION)
    lock = s3_rep.get_object_lock_configuration(Bucket=rep)["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"

    src2, rep2 = pair()
    s3_src.create_bucket(
        Bucket=src2, CreateBucketConfiguration={"LocationConstraint": SOURCE_REGION}, ObjectLockEnabledForBucket=True
    )
    s3_rep.create_bucket(Bucket=rep2, CreateBucketConfiguration={"LocationConstraint": REPLICA_REGION})
    r = aws.setup("check", src2, rep2)
    assert r.code == 1
    assert any("has no Object Lock and the source has" in x for x in drifts(r.stdout)), r.stdout
    r = aws.setup("apply", src2, rep2, "--yes")
    assert r.code == 2 and "put-object-lock-configuration" in one_line_error(r), r.stdout + r.stderr


def test_apply_with_kms_keys_replicates_sse_kms_objects_into_the_replica_key(aws: Aws) -> None:
    """Keys created in moto (KMS, each in its account and region): apply writes the rule's SSE-KMS criteria and
    replica key and the role's KMS statements on exactly those keys; check then notices a rule that lost them."""
    src, rep = pair()
    source_key = aws.client("kms", SOURCE, SOURCE_REGION).create_key(Description="source")["KeyMetadata"]["Arn"]
    replica_key = aws.client("kms", REPLICA, REPLICA_REGION).create_key(Description="replica")["KeyMetadata"]["Arn"]
    keys = ["--source-kms-key", source_key, "--replica-kms-key", replica_key]
    r = aws.setup("apply", src, rep, "--yes", *keys)
    assert r.code == 0, r.stderr
    assert "the KMS key policies are not changed by apply" in r.stdout, r.stdout
    s3 = aws.client("s3", SOURCE)
    (rule,) = s3.get_bucket_replication(Bucket=src)["ReplicationConfiguration"]["Rules"]
    assert rule["SourceSelectionCriteria"] == {"SseKmsEncryptedObjects": {"Status": "Enabled"}}, rule
    assert rule["Destination"]["EncryptionConfiguration"] == {"ReplicaKmsKeyID": replica_key}, rule
    iam = aws.client("iam", SOURCE)
    arn = f"arn:aws:iam::{SOURCE}:policy/backfill-replication-{src}"
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    kms = [st for st in d.statements(doc) if any(a.startswith("kms:") for a in st["Action"])]
    cfg = make_config(
        source=f"s3://{src}",
        source_account=SOURCE,
        source_region=SOURCE_REGION,
        source_profile=None,
        replica=f"s3://{rep}",
        replica_account=REPLICA,
        replica_region=REPLICA_REGION,
        replica_profile=None,
        source_kms_key=source_key,
        replica_kms_key=replica_key,
    )
    assert kms == kms_statements(cfg, source_key, replica_key)
    assert all(st["Resource"] in (source_key, replica_key) for st in kms)  # never a wildcard key
    again = aws.setup("apply", src, rep, "--yes", *keys)
    assert steps(again.stdout) == dict.fromkeys(range(1, 10), "unchanged"), again.stdout

    # Someone rewrites the rule without the SSE-KMS criteria and the replica key.
    repl = s3.get_bucket_replication(Bucket=src)["ReplicationConfiguration"]
    del repl["Rules"][0]["SourceSelectionCriteria"]
    del repl["Rules"][0]["Destination"]["EncryptionConfiguration"]
    s3.put_bucket_replication(Bucket=src, ReplicationConfiguration=repl)
    r = aws.setup("check", src, rep, *keys)
    assert r.code == 1
    assert [x for x in drifts(r.stdout) if "alert" not in x] == [
        f"the replication rule backfill-to-{rep} does not replicate SSE-KMS objects (no SseKmsEncryptedObjects)",
        f"the replication rule backfill-to-{rep} encrypts replicas with no KMS key, not {replica_key}",
    ], r.stdout
    # Without the keys, the same rule is what was asked for.
    r = aws.setup("check", src, rep)
    assert not [x for x in drifts(r.stdout) if "alert" not in x and "permissions policy" not in x], r.stdout

    r = aws.setup("grant-backfill", src, rep, *keys)
    assert r.code == 0, r.stderr
    assert f"the key policy of the source key {source_key} must let arn:aws:iam::{REPLICA}:root kms:Decrypt" in (
        r.stdout
    ), r.stdout
    assert "aws/s3" in r.stdout
