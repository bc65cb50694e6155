"""The lean request path is proven equal to botocore's.

- Requests: for the same operation, parameters, credentials and time, the
  request botocore would send and ours have the same method, path, query,
  headers and signature (keys with every awkward character, session tokens,
  several regions). No server is needed: botocore's request is captured just
  before it would be sent.
- Listings: on the same ListObjectVersions / ListObjectsV2 pages from real
  servers, our parser and botocore's see the same entries, in the same order.
- Behaviour over the wire: a real server accepts our signatures for awkward
  keys, and credentials that botocore refreshes are picked up.
"""

from __future__ import annotations

import sys
import urllib.parse
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest
from botocore.config import Config
from botocore.credentials import ReadOnlyCredentials
from botocore.handlers import set_list_objects_encoding_type_url

from backfill.config import S3Url, Side
from backfill.errors import AccessDenied, RetryableError, classify
from backfill.models import Version
from backfill.pacing import Pacer, RateLimiter, RetryPolicy
from backfill.s3 import (
    Wire,
    copy_headers,
    list_delimited_params,
    list_versions_params,
    new_session,
    open_bucket,
    open_client,
    parse_list_delimited,
    parse_list_versions,
)
from backfill.s3.http1 import Pool
from backfill.s3.sigv4 import Signer
from testbed.faults import Fault
from testbed.proxy import ThreadedProxy
from testbed.store import Store

AWKWARD_KEYS = [
    "plain/key.txt",
    "with space/and  two",
    "plus+sign/a+b",
    "percent%20encoded%2F",
    "question?mark&amp=1",
    "hash#fragment",
    "unicode/日本語/ünï/😀",
    "quotes'and\"double",
    "angle<brackets>&amp;",
    "tilde~star*paren()",
    "semi;colon:comma,equals=at@dollar$",
    "control\tand\nnewline",
    "trailing space ",
    "dots/./and/../parent",
    "x" * 300 + "/" + "y" * 600,
]


def seaweed_keys() -> list[str]:
    """The awkward keys SeaweedFS takes: no "." or ".." segments, no very long ones (TESTBED.md)."""
    return [k for k in AWKWARD_KEYS if "/./" not in k and "/../" not in k and len(k) < 500]


def moto_keys() -> list[str]:
    """The awkward keys moto's HTTP server takes: no control characters in the path."""
    return [k for k in AWKWARD_KEYS if k.isprintable()]


class _Captured(Exception):
    """Raised by the before-send hook: botocore built and signed the request; it goes no further."""


def botocore_request(region: str, token: str | None, op: str, **params: Any) -> Any:
    """The request (AWSPreparedRequest) that botocore's client would send for one call."""
    client = boto3.client(
        "s3",
        region_name=region,
        endpoint_url="http://127.0.0.1:9000",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        aws_session_token=token,
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )
    got: list[Any] = []

    def grab(request: Any, **_: Any) -> None:
        got.append(request)
        raise _Captured

    client.meta.events.register("before-send.s3.*", grab)
    with pytest.raises(_Captured):
        getattr(client, op)(**params)
    return got[0]


def parse_head(raw: bytes) -> tuple[str, str, dict[str, str]]:
    lines = raw.decode("utf-8").split("\r\n")
    assert lines[-2:] == ["", ""], "a request head ends with an empty line"
    method, target, version = lines[0].split(" ")
    assert version == "HTTP/1.1"
    headers: dict[str, str] = {}
    for line in lines[1:-2]:
        name, _, value = line.partition(": ")
        assert name not in headers, f"header {name} sent twice"
        headers[name] = value
    return method, target, headers


def compare(region: str, token: str | None, theirs: Any, method: str, path: str, params: Any, hdrs: Any) -> None:
    wire = Wire(Pool("127.0.0.1", 9000, None), Signer(region), None, "127.0.0.1:9000", "/bucket")
    keys = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    amz_date = theirs.headers["X-Amz-Date"]
    amz_date = amz_date.decode() if isinstance(amz_date, bytes) else amz_date
    our_method, target, our_headers = parse_head(wire.request_head(method, path, params, hdrs, keys, amz_date))

    url = urllib.parse.urlsplit(theirs.url)
    assert our_method == theirs.method
    our_path, _, our_query = target.partition("?")
    assert our_path == url.path
    assert sorted(urllib.parse.parse_qsl(our_query, keep_blank_values=True)) == sorted(
        urllib.parse.parse_qsl(url.query, keep_blank_values=True)
    )

    # Every header botocore signs (but the SDK's own bookkeeping) is sent by us, with the same value.
    their = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in theirs.headers.items()}
    auth = their.pop("authorization")
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    sdk_only = {"amz-sdk-invocation-id", "amz-sdk-request", "content-md5", "host"}
    for name in signed:
        if name in sdk_only:
            continue
        assert our_headers.get(name) == their[name], name
    assert our_headers["host"] == url.netloc

    # Our signer, given botocore's headers, produces botocore's signature exactly.
    their_signed = {n: (their[n] if n != "host" else url.netloc) for n in signed}
    mine = Signer(region).authorization(
        keys.access_key, keys.secret_key, method, our_path, our_query, their_signed, amz_date
    )
    assert mine == auth

    # And what we send is signed over exactly what we send.
    names = sorted(n for n in our_headers if n not in ("authorization", "user-agent", "content-length"))
    assert our_headers["authorization"].split("SignedHeaders=")[1].split(",")[0] == ";".join(names)


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-1", "ap-southeast-2"])
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEXAMPLE//token+with/slashes=="])
@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_copy_object_request_equals_botocore(region: str, token: str | None, key: str) -> None:
    v = Version(key, "3/L4kqtJl40Nr8X8gdRQBpUMLUo", 10, "9b2cf535f27731c974343645a3985328", "")
    target = {"StorageClass": "STANDARD_IA", "ACL": "bucket-owner-full-control"}
    theirs = botocore_request(
        region,
        token,
        "copy_object",
        Bucket="bucket",
        Key="dst/" + key,
        CopySource={"Bucket": "source-bucket", "Key": key, "VersionId": v.version_id},
        CopySourceIfMatch=f'"{v.etag}"',
        **target,
    )
    wire = Wire(Pool("127.0.0.1", 9000, None), Signer(region), None, "127.0.0.1:9000", "/bucket")
    compare(region, token, theirs, "PUT", wire.object_path("dst/" + key), [], copy_headers("source-bucket", v, target))


@pytest.mark.parametrize("token", [None, "session-token"])
@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_delete_object_request_equals_botocore(token: str | None, key: str) -> None:
    theirs = botocore_request("eu-west-1", token, "delete_object", Bucket="bucket", Key=key)
    wire = Wire(Pool("127.0.0.1", 9000, None), Signer("eu-west-1"), None, "127.0.0.1:9000", "/bucket")
    compare("eu-west-1", token, theirs, "DELETE", wire.object_path(key), [], {})


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_listing_requests_equal_botocore(key: str) -> None:
    prefix, marker = key[:5], key
    theirs = botocore_request(
        "eu-west-1",
        None,
        "list_object_versions",
        Bucket="bucket",
        Prefix=prefix,
        KeyMarker=marker,
        VersionIdMarker="null",
        MaxKeys=1000,
        EncodingType="url",
    )
    compare("eu-west-1", None, theirs, "GET", "/bucket", list_versions_params(prefix, marker, "null", 1000), {})
    theirs = botocore_request(
        "eu-west-1",
        None,
        "list_objects_v2",
        Bucket="bucket",
        Prefix=key,
        Delimiter="/",
        MaxKeys=100,
        EncodingType="url",
    )
    compare("eu-west-1", None, theirs, "GET", "/bucket", list_delimited_params(key, 100), {})


# --- listings parsed the same way ----------------------------------------------


def _raw_pages(store: Store, op: str, *, plain: bool, **params: Any) -> list[tuple[bytes, dict[str, Any]]]:
    """Every page of a listing: (raw body, botocore's parsed answer).

    botocore asks for url-encoded keys (and decodes them) unless told otherwise;
    `plain` takes that handler away, so keys come as XML text.
    """
    c = store.new_client()
    name = "ListObjectVersions" if op == "list_object_versions" else "ListObjectsV2"
    if plain:
        c.meta.events.unregister(f"before-parameter-build.s3.{name}", set_list_objects_encoding_type_url)
    bodies: list[bytes] = []

    def grab(response_dict: dict[str, Any], **_: Any) -> None:
        bodies.append(response_dict["body"])

    c.meta.events.register(f"before-parse.s3.{name}", grab)
    pages: list[tuple[bytes, dict[str, Any]]] = []
    while True:
        r = getattr(c, op)(**params)
        if plain:
            assert "EncodingType" not in r
        pages.append((bodies[-1], r))
        if not r.get("IsTruncated"):
            return pages
        if op == "list_object_versions":
            params["KeyMarker"], params["VersionIdMarker"] = r["NextKeyMarker"], r["NextVersionIdMarker"]
        else:
            params["ContinuationToken"] = r["NextContinuationToken"]


def _seed_awkward(store: Store, bucket: str) -> None:
    c = store.client
    keys = moto_keys() if store.name == "moto" else seaweed_keys()
    for i, key in enumerate(keys):
        for n in range(1 + i % 3):
            c.put_object(Bucket=bucket, Key=key, Body=f"{key} {n}".encode(), StorageClass="STANDARD")
        if i % 4 == 0:
            c.delete_object(Bucket=bucket, Key=key)
    cold = "GLACIER" if store.name == "moto" else "STANDARD_IA"  # SeaweedFS refuses GLACIER on PUT
    c.put_object(Bucket=bucket, Key="cold/archived", Body=b"cold", StorageClass=cold)


@pytest.mark.parametrize("plain", [False, True], ids=["url-encoded", "plain"])
def test_version_listing_parsed_like_botocore(store: Store, plain: bool) -> None:
    src, _ = store.buckets()
    _seed_awkward(store, src)
    pages = _raw_pages(store, "list_object_versions", plain=plain, Bucket=src, MaxKeys=7)
    assert len(pages) > 3
    seen = 0
    for body, r in pages:
        page = parse_list_versions(body)
        versions = [e for e in page.entries if not e.is_delete_marker]
        markers = [e for e in page.entries if e.is_delete_marker]
        seen += len(page.entries)

        def theirs(e: dict[str, Any], marker: bool) -> tuple[Any, ...]:
            sc = e.get("StorageClass", "STANDARD")
            return (
                e["Key"],
                e["VersionId"],
                0 if marker else e["Size"],
                "" if marker else e["ETag"].strip('"'),
                e["IsLatest"],
                "" if marker or sc == "STANDARD" else sc,
                e["LastModified"],
            )

        def mine(v: Version) -> tuple[Any, ...]:
            from datetime import datetime

            return (
                v.key,
                v.version_id,
                v.size,
                v.etag,
                v.is_latest,
                v.storage_class,
                datetime.fromisoformat(v.last_modified.replace("Z", "+00:00")),
            )

        # Within each kind, botocore keeps document order; so must we (as a subsequence).
        their_versions = [theirs(e, False) for e in r.get("Versions", [])]
        their_markers = [theirs(e, True) for e in r.get("DeleteMarkers", [])]
        if store.name == "moto":  # moto's pages list versions, then markers: we regroup them by key
            assert sorted(map(mine, versions)) == sorted(their_versions)
            assert sorted(map(mine, markers)) == sorted(their_markers)
        else:
            assert [mine(v) for v in versions] == their_versions
            assert [mine(v) for v in markers] == their_markers
        assert page.truncated == r["IsTruncated"]
        assert page.next_key_marker == r.get("NextKeyMarker")
        assert page.next_version_id_marker == r.get("NextVersionIdMarker")
    assert seen == sum(len(r.get("Versions", [])) + len(r.get("DeleteMarkers", [])) for _, r in pages)


@pytest.mark.parametrize("plain", [False, True], ids=["url-encoded", "plain"])
def test_delimited_listing_parsed_like_botocore(store: Store, plain: bool) -> None:
    src, _ = store.buckets()
    _seed_awkward(store, src)
    for prefix in ("", "unicode/", "with space/"):
        pages = _raw_pages(store, "list_objects_v2", plain=plain, Bucket=src, Prefix=prefix, Delimiter="/", MaxKeys=4)
        for body, r in pages:
            prefixes, keys, truncated = parse_list_delimited(body)
            assert prefixes == [p["Prefix"] for p in r.get("CommonPrefixes", [])]
            assert keys == [c["Key"] for c in r.get("Contents", [])]
            assert truncated == r["IsTruncated"]


# --- over the wire ---------------------------------------------------------------


def _side(store: Store, bucket: str, profile: str | None = None) -> Side:
    return Side(S3Url(bucket, ""), profile, "us-east-1", store.endpoint)


def test_a_real_server_accepts_our_signatures(seaweed: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """SeaweedFS checks SigV4: every awkward key is listed, copied and deleted over the lean path."""
    src, dst = seaweed.buckets()
    c = seaweed.client
    keys = seaweed_keys()
    vids = {k: c.put_object(Bucket=src, Key=k, Body=k.encode())["VersionId"] for k in keys}
    for name, value in seaweed.env.items():
        monkeypatch.setenv(name, value)

    async def main() -> None:
        pacer = Pacer(None, RateLimiter(None), RetryPolicy(attempts=1))
        async with (
            open_bucket(_side(seaweed, src), "source", pacer, 4) as s,
            open_bucket(_side(seaweed, dst), "replica", pacer, 4) as d,
        ):
            assert s.wire is not None and d.wire is not None
            listed: list[Version] = []
            marker: str | None = None
            vmarker: str | None = None
            while True:
                page = await s.wire.list_versions("", marker, vmarker, 4)
                listed.extend(page.entries)
                if not page.truncated:
                    break
                marker, vmarker = page.next_key_marker, page.next_version_id_marker
            assert {v.key: v.version_id for v in listed} == vids
            for v in listed:
                rvid = await d.wire.copy_object(v.key, copy_headers(src, v, {}), v.size)
                assert rvid
            for k in keys:
                assert await d.wire.delete_object(k)  # a delete marker's version ID

    anyio.run(main)
    for k in keys:
        assert (
            c.get_object(
                Bucket=dst, Key=k, VersionId=c.list_object_versions(Bucket=dst, Prefix=k)["Versions"][0]["VersionId"]
            )["Body"].read()
            == k.encode()
        )


def test_refreshed_credentials_are_used(seaweed: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials from a credential_process that expire soon are asked for again, and used.

    Once the bucket is open, the process starts handing out a key the server does
    not know: the lean path's next request failing with a denial proves that it
    signs with what botocore refreshed, not with what it had at the start.
    """
    src, _ = seaweed.buckets()
    switch = tmp_path / "switch"
    script = tmp_path / "creds.py"
    script.write_text(
        "import datetime, json, pathlib\n"
        "expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)\n"
        f"good = not pathlib.Path({str(switch)!r}).exists()\n"
        f"key = {seaweed.env['AWS_ACCESS_KEY_ID']!r} if good else 'AKIDUNKNOWN'\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': key,\n"
        f"    'SecretAccessKey': {seaweed.env['AWS_SECRET_ACCESS_KEY']!r},\n"
        "    'Expiration': expires.isoformat()}))\n"
    )
    config = tmp_path / "config"
    config.write_text(f"[profile refreshing]\ncredential_process = {sys.executable} {script}\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweed.endpoint)

    async def main() -> None:
        pacer = Pacer(None, RateLimiter(None), RetryPolicy(attempts=1))
        async with open_bucket(_side(seaweed, src, "refreshing"), "source", pacer, 4) as s:
            assert s.wire is not None
            await s.list_versions("", None, None)  # the keys it started with work
            switch.touch()
            await s.list_versions("", None, None)  # within the cache's few seconds: still the old keys
            s.wire.credentials_ttl = 0.0  # ask botocore before every request from now on
            with pytest.raises(AccessDenied, match="ListObjectVersions"):
                await s.list_versions("", None, None)  # refreshed (5 minutes left): the new key is refused

    anyio.run(main)


def test_an_s3_client_of_the_factory_never_sends_a_request_again_by_itself(
    seaweed: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every S3 client of the product (a run's buckets, the state location, setup) comes from s3.open_client, with
    botocore's retries off and aiohttp's silent resend off: a PUT on a reused connection that drops after the
    request went out (the server wrote it) fails once, as an ambiguous failure, and was sent once. What happens
    next is Pacer's, which looks for the write before it sends it again."""
    src, _ = seaweed.buckets()
    for name, value in seaweed.env.items():
        monkeypatch.setenv(name, value)
    faults = [Fault("reset_after", 1.0, op="PutObject", limit=1)]
    with ThreadedProxy(seaweed.endpoint, faults=faults, seed=1) as proxy:

        async def main() -> BaseException:
            async with open_client(new_session(None), region="us-east-1", endpoint_url=proxy.endpoint_url) as client:
                await client.head_bucket(Bucket=src)  # the PUT goes on a reused connection: aiohttp would resend it
                try:
                    await client.put_object(Bucket=src, Key="once", Body=b"1")
                except Exception as exc:
                    return classify(exc, what="PutObject")
            raise AssertionError("the dropped answer did not reach the caller")

        err = anyio.run(main)
        stats = proxy.stats
    assert isinstance(err, RetryableError) and err.ambiguous, err
    assert stats.get("requests:PutObject") == 1 and stats.get("reset_after:PutObject") == 1, stats
    assert seaweed.client.get_object(Bucket=src, Key="once")["Body"].read() == b"1"  # it landed, once
