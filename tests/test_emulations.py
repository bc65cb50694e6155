"""The test bed's emulations of real-bucket behaviour (testbed/kms_etags.py, testbed/requester_pays.py),
checked with plain boto3 against SeaweedFS, and its fixes to moto (testbed/moto_fixes.py), checked on both
servers: a test that relies on them relies on what is checked here.
"""

from __future__ import annotations

import hashlib

import pytest
from botocore.exceptions import ClientError

from testbed.kms_etags import KEY_ARN, KmsEtagProxy
from testbed.requester_pays import RequesterPaysProxy
from testbed.s3http import Keys, Threaded
from testbed.store import Store

MiB = 1024 * 1024


def _creds(store: Store) -> Keys:
    return {"access_key": store.env["AWS_ACCESS_KEY_ID"], "secret_key": store.env["AWS_SECRET_ACCESS_KEY"]}


def test_kms_proxy_gives_consistent_opaque_etags_and_maps_conditions_back(seaweed: Store) -> None:
    src, dst = seaweed.buckets()
    direct = seaweed.client
    body = b"hello kms"
    md5 = hashlib.md5(body).hexdigest()
    with Threaded(KmsEtagProxy(seaweed.endpoint, **_creds(seaweed))) as kms:
        c = seaweed.new_client(kms.endpoint_url)
        put = c.put_object(Bucket=src, Key="k", Body=body)
        etag = put["ETag"].strip('"')
        assert etag != md5 and len(etag) == 32
        assert put["ServerSideEncryption"] == "aws:kms" and put["SSEKMSKeyId"] == KEY_ARN
        vid = put["VersionId"]
        listed = c.list_object_versions(Bucket=src)["Versions"][0]["ETag"].strip('"')
        v2 = c.list_objects_v2(Bucket=src)["Contents"][0]["ETag"].strip('"')
        head = c.head_object(Bucket=src, Key="k", VersionId=vid)
        assert listed == v2 == head["ETag"].strip('"') == etag
        assert head["ServerSideEncryption"] == "aws:kms"
        # Checksums are of the plaintext: they pass through.
        assert c.head_object(Bucket=src, Key="k", ChecksumMode="ENABLED")["ChecksumCRC32"]
        # Conditions name the opaque ETag and are mapped back (the request signed again).
        assert c.get_object(Bucket=src, Key="k", IfMatch=f'"{etag}"')["Body"].read() == body
        with pytest.raises(ClientError):
            c.get_object(Bucket=src, Key="k", IfMatch=f'"{md5}"')  # the server's own ETag is unknown here
        copy = c.copy_object(
            Bucket=dst, Key="k", CopySource={"Bucket": src, "Key": "k", "VersionId": vid}, CopySourceIfMatch=f'"{etag}"'
        )
        copied = copy["CopyObjectResult"]["ETag"].strip('"')
        assert copied not in (etag, md5) and len(copied) == 32  # a new data key: another ETag
        assert c.head_object(Bucket=dst, Key="k")["ETag"].strip('"') == copied
        with pytest.raises(ClientError) as e:
            c.copy_object(Bucket=dst, Key="k2", CopySource={"Bucket": src, "Key": "k"}, CopySourceIfMatch='"0" * 32')
        assert e.value.response["Error"]["Code"] in ("PreconditionFailed", "412")
        # Multipart: opaque part ETags, mapped back in CompleteMultipartUpload; "-N" kept.
        direct.put_object(Bucket=src, Key="big", Body=b"B" * (6 * MiB))
        up = c.create_multipart_upload(Bucket=dst, Key="big")["UploadId"]
        parts = []
        for n, rng in ((1, f"bytes=0-{5 * MiB - 1}"), (2, f"bytes={5 * MiB}-{6 * MiB - 1}")):
            r = c.upload_part_copy(
                Bucket=dst,
                Key="big",
                UploadId=up,
                PartNumber=n,
                CopySource={"Bucket": src, "Key": "big"},
                CopySourceRange=rng,
            )
            parts.append({"ETag": r["CopyPartResult"]["ETag"], "PartNumber": n})
        done = c.complete_multipart_upload(Bucket=dst, Key="big", UploadId=up, MultipartUpload={"Parts": parts})
        assert done["ETag"].strip('"').endswith("-2")
        assert c.head_object(Bucket=dst, Key="big")["ETag"] == done["ETag"]
        assert kms.proxy.rewritten > 0
    # The server itself still holds MD5 ETags: only the proxy's clients see opaque ones.
    assert direct.head_object(Bucket=src, Key="k")["ETag"].strip('"') == md5


def test_kms_proxy_without_checksums_strips_them(seaweed: Store) -> None:
    src, _ = seaweed.buckets()
    with Threaded(KmsEtagProxy(seaweed.endpoint, **_creds(seaweed), checksums=False)) as kms:
        c = seaweed.new_client(kms.endpoint_url)
        c.put_object(Bucket=src, Key="k", Body=b"old object")
        head = c.head_object(Bucket=src, Key="k", ChecksumMode="ENABLED")
        assert not any(k.startswith("Checksum") for k in head), head


def test_requester_pays_proxy_refuses_requests_without_the_header(seaweed: Store) -> None:
    src, dst = seaweed.buckets()
    seaweed.client.put_object(Bucket=src, Key="k", Body=b"x")
    with Threaded(RequesterPaysProxy(seaweed.endpoint, **_creds(seaweed), buckets={src})) as rp:
        c = seaweed.new_client(rp.endpoint_url)
        with pytest.raises(ClientError) as e:
            c.list_object_versions(Bucket=src)
        assert e.value.response["Error"]["Code"] == "AccessDenied"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError) as e:
            c.head_object(Bucket=src, Key="k")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError) as e:  # a copy out of it, sent to the replica, reads the source
            c.copy_object(Bucket=dst, Key="k", CopySource={"Bucket": src, "Key": "k"})
        assert e.value.response["Error"]["Code"] == "AccessDenied"
        r = c.list_object_versions(Bucket=src, RequestPayer="requester")
        assert r["RequestCharged"] == "requester"
        c.copy_object(Bucket=dst, Key="k", CopySource={"Bucket": src, "Key": "k"}, RequestPayer="requester")
        c.put_object(Bucket=dst, Key="other", Body=b"y")  # the replica is no Requester Pays bucket
        assert rp.proxy.refused[f"GET {src}"] == 1


def test_a_key_marker_listing_begins_after_every_version_of_the_marker(store: Store) -> None:
    """ListObjectVersions with a key-marker alone, as AWS answers it (testbed/moto_fixes.py makes moto do so):
    the listing begins with the first key after the marker, whether the marker is a key or not."""
    src, _ = store.buckets()
    c = store.client
    for key, n in (("d/a", 2), ("d/b", 3), ("d/c", 1), ("e/a", 2)):
        for i in range(n):
            c.put_object(Bucket=src, Key=key, Body=f"{key} {i}".encode())
    page = c.list_object_versions(Bucket=src)
    every = [(v["Key"], v["VersionId"]) for v in page["Versions"]]
    assert len(every) == 8 and not page["IsTruncated"]
    for marker in ("a", "d/", "d/a", "d/b", "d/bb", "d/c", "e/", "e/a", "z"):
        page = c.list_object_versions(Bucket=src, KeyMarker=marker)
        got = [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
        assert got == [e for e in every if e[0] > marker], marker
        # and page by page from there, 2 entries at a time (the markers the server hands back)
        kw: dict[str, str] = {"KeyMarker": marker}
        paged: list[tuple[str, str]] = []
        while True:
            page = c.list_object_versions(Bucket=src, MaxKeys=2, **kw)
            paged += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
            if not page["IsTruncated"]:
                break
            kw = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}
        assert paged == got, marker
