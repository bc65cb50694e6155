"""Start-up: a plain copy imports no SDK, each side is resolved once, and the preflight's refusals keep their order.

The lean resolution (s3/connect.py, lean_reach) answers only where botocore would answer the same:
an explicit endpoint, static keys in the environment, no profile, no config file, no proxy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from backfill.config import S3Url, Side
from backfill.s3.connect import lean_reach
from testbed.store import Store


def _imported(stderr: str) -> set[str]:
    """The modules `python -X importtime` reported (PYTHONPROFILEIMPORTTIME=1)."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_a_plain_copy_imports_no_sdk(seaweed: Store, manifest: str) -> None:
    """botocore's session, aioboto3 and aiohttp cost ≈0.3 s of CPU to import: a copy of small objects from an
    explicit endpoint with keys in the environment never needs them, and copies all the same."""
    src, dst = seaweed.buckets()
    for i in range(5):
        seaweed.client.put_object(Bucket=src, Key=f"k{i}", Body=b"v")
    seaweed.client.delete_object(Bucket=src, Key="k0")  # a delete marker: DeleteObject on the lean path too
    r = seaweed.run("copy", f"s3://{src}", f"s3://{dst}", "--manifest", manifest, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.code == 0, r.stderr
    modules = _imported(r.stderr)
    assert "backfill.pipeline.copier" in modules  # the report is there at all
    heavy = {m for m in modules if m.split(".")[0] in ("aioboto3", "aiobotocore", "aiohttp", "boto3")}
    heavy |= {m for m in modules if m in ("botocore.session", "botocore.client", "backfill.s3.sdk")}
    assert not heavy, sorted(heavy)
    assert seaweed.history(dst).keys() == seaweed.history(src).keys()


def _side(**kw: object) -> Side:
    return Side(S3Url("bucket", ""), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("env", "side", "lean"),
    [
        ({}, {"endpoint_url": "http://127.0.0.1:9000"}, True),
        ({"AWS_SESSION_TOKEN": "t"}, {"endpoint_url": "https://s3.example:8443/base/"}, True),
        ({}, {}, False),  # AWS's own endpoints: botocore resolves them (virtual hosts, FIPS, partitions)
        ({}, {"endpoint_url": "http://127.0.0.1:9000", "profile": "p"}, False),
        ({"AWS_PROFILE": "p"}, {"endpoint_url": "http://127.0.0.1:9000"}, False),  # botocore skips the env keys
        ({"AWS_CREDENTIAL_EXPIRATION": "2030-01-01T00:00:00Z"}, {"endpoint_url": "http://127.0.0.1:9000"}, False),
        ({"AWS_USE_FIPS_ENDPOINT": "true"}, {"endpoint_url": "http://127.0.0.1:9000"}, False),
        ({"HTTP_PROXY": "http://127.0.0.1:3128"}, {"endpoint_url": "http://10.0.0.1:9000"}, False),
        ({}, {"endpoint_url": "http://127.0.0.1:9000", "lean": False}, False),  # --http botocore
    ],
)
def test_the_lean_resolution_answers_only_where_botocore_would_answer_the_same(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], side: dict[str, object], lean: bool
) -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE", "HTTP_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reach = lean_reach(_side(**side))
    assert (reach is not None) == lean
    if reach is not None and "base" in str(side.get("endpoint_url")):
        assert (reach.host, reach.path, reach.keys.token) == ("s3.example:8443", "/base", "t")
        assert reach.ca  # https: botocore's bundle


def test_a_config_file_or_missing_keys_leave_it_to_botocore(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("[default]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    side = _side(endpoint_url="http://127.0.0.1:9000")
    assert lean_reach(side) is None  # the profile's region (and more) is botocore's to read
    config.write_text("")
    assert lean_reach(side) is not None
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert lean_reach(side) is None  # botocore says what is missing (PartialCredentialsError)


def test_when_both_buckets_are_refused_the_source_is_named(seaweed: Store, manifest: str) -> None:
    """The two HeadBuckets go out at once; the line is the one a run that opened them in turn gave."""
    r = seaweed.run("copy", "s3://no-such-source-bucket", "s3://no-such-replica-bucket", "--manifest", manifest)
    assert r.code == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if not line.startswith("manifest:")]
    assert len(lines) == 1 and "source bucket s3://no-such-source-bucket does not exist" in lines[0], r.stderr
    assert not Path(manifest).exists()


REPLICATION = b"""<?xml version="1.0" encoding="UTF-8"?>
<ReplicationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Role>arn:aws:iam::1:role/r</Role>
<Rule><ID>a</ID><Priority>1</Priority><Filter><Prefix>p/</Prefix></Filter><Status>Enabled</Status>
<DeleteMarkerReplication><Status>Enabled</Status></DeleteMarkerReplication>
<Destination><Bucket>arn:aws:s3:::dst</Bucket><Account>2</Account></Destination></Rule>
<Rule><ID>v1</ID><Prefix>q/</Prefix><Status>Disabled</Status><Destination><Bucket>arn:aws:s3:::dst</Bucket>
</Destination></Rule>
<Rule><ID>t</ID><Priority>3</Priority><Filter><Tag><Key>k</Key><Value>v</Value></Tag></Filter><Status>Enabled</Status>
<Destination><Bucket>arn:aws:s3:::other</Bucket></Destination></Rule>
<Rule><ID>and</ID><Priority>4</Priority><Filter><And><Prefix>t/</Prefix><Tag><Key>k</Key><Value>v</Value></Tag>
<Tag><Key>k2</Key><Value>v2</Value></Tag></And></Filter><Status>Enabled</Status>
<DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication>
<Destination><Bucket>arn:aws:s3:::dst</Bucket></Destination></Rule></ReplicationConfiguration>"""


def test_the_replication_configuration_is_read_as_botocore_reads_it() -> None:
    """The lean preflight reads GetBucketReplication itself: every field it keeps equals botocore's."""
    import botocore.session
    from botocore.parsers import RestXMLParser

    from backfill.s3.listing import parse_replication

    op = botocore.session.get_session().get_service_model("s3").operation_model("GetBucketReplication")
    theirs = RestXMLParser().parse({"body": REPLICATION, "headers": {}, "status_code": 200}, op.output_shape)
    ours = parse_replication(REPLICATION)
    rules = theirs["ReplicationConfiguration"]["Rules"]
    assert len(ours["Rules"]) == len(rules) == 4
    for mine, botos in zip(ours["Rules"], rules, strict=True):
        for k, v in mine.items():
            want = botos[k]
            if k == "Destination":
                want = {"Bucket": want["Bucket"]}
            assert v == want, (k, v, want)
        assert set(botos) - set(mine) <= {"Destination", "SourceSelectionCriteria", "ExistingObjectReplication"}


def test_a_ctrl_c_that_python_drops_in_a_callback_is_raised_when_the_window_closes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A SIGINT whose handler runs inside a weakref callback (the import machinery has them) raises there,
    where Python cannot propagate it: it prints "Exception ignored in …" with a traceback and goes on.
    Within interrupts.watching() (the first imports, a command's set-up) it is raised at the window's end,
    without that traceback (a run stopped during start-up once ran to its end instead, exit 0)."""
    import os
    import signal
    import weakref

    from backfill.interrupts import watching

    class Thing:
        pass

    def callback(_: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(1000))  # the handler runs here, inside the callback

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    went_on = False
    try:
        with pytest.raises(KeyboardInterrupt), watching():
            thing = Thing()
            ref = weakref.ref(thing, callback)
            del thing
            went_on = ref() is None  # reached: the KeyboardInterrupt did not propagate from the callback
    finally:
        signal.signal(signal.SIGINT, previous)
    assert went_on
    err = capsys.readouterr().err
    assert "Exception ignored" not in err and "Traceback" not in err
