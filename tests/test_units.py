"""Pure parts checked on real inputs: shard partitions, listing order, the limiter."""

from __future__ import annotations

import random
import string

import anyio
import anyio.lowlevel
import pytest

from backfill.pacing import AdaptiveLimiter
from backfill.pipeline.shards import shards_from_boundaries
from backfill.s3 import parse_list_versions


def _in_shard(key: str, after: str | None, upto: str | None) -> bool:
    return (after is None or key > after) and (upto is None or key <= upto)


def test_any_boundaries_partition_the_keys_exactly() -> None:
    rng = random.Random(1)
    alphabet = string.ascii_letters + string.digits + "/-_. +%ü日"
    keys = {"".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 12))) for _ in range(3000)}
    boundaries = [*rng.sample(sorted(keys), 20), "a/", "b/", "zz", "ü", "/"]
    shards = shards_from_boundaries("", boundaries)
    for key in keys:
        owners = [s.id for s in shards if _in_shard(key, s.after, s.upto)]
        assert len(owners) == 1, (key, owners)
    # Python's str order is S3's UTF-8 byte order for valid keys.
    assert sorted(keys) == sorted(keys, key=lambda k: k.encode())


NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def _version(key: str, vid: str, ts: str, size: int = 1) -> str:
    return (
        f"<Version><Key>{key}</Key><VersionId>{vid}</VersionId><IsLatest>false</IsLatest>"
        f"<LastModified>{ts}</LastModified><ETag>&quot;e{vid}&quot;</ETag><Size>{size}</Size>"
        "<StorageClass>STANDARD</StorageClass></Version>"
    )


def _marker(key: str, vid: str, ts: str) -> str:
    return (
        f"<DeleteMarker><Key>{key}</Key><VersionId>{vid}</VersionId><IsLatest>false</IsLatest>"
        f"<LastModified>{ts}</LastModified></DeleteMarker>"
    )


def test_interleaved_history_keeps_document_order_even_when_timestamps_tie() -> None:
    t = "2026-11-25T04:22:19Z"
    body = (
        f"<ListVersionsResult {NS}><IsTruncated>true</IsTruncated><NextKeyMarker>k</NextKeyMarker>"
        f"<NextVersionIdMarker>1</NextVersionIdMarker>"
        + _marker("k", "5", t)
        + _version("k", "4", t)
        + _marker("k", "3", t)
        + _version("k", "2", t)
        + _version("k", "1", t)
        + "</ListVersionsResult>"
    ).encode()
    page = parse_list_versions(body)
    assert [(v.version_id, v.is_delete_marker) for v in page.entries] == [
        ("5", True),
        ("4", False),
        ("3", True),
        ("2", False),
        ("1", False),
    ]
    assert page.truncated and page.next_key_marker == "k" and page.next_version_id_marker == "1"
    assert page.entries[1].etag == "e4"


def test_versions_then_markers_listing_is_regrouped_by_key_and_time() -> None:
    body = (
        f"<ListVersionsResult {NS}><IsTruncated>false</IsTruncated>"
        + _version("a", "a2", "2026-01-01T00:00:02.000Z")
        + _version("a", "a1", "2026-01-01T00:00:01.000Z")
        + _version("b", "b1", "2026-01-01T00:00:01.000Z")
        + _marker("a", "a3", "2026-01-01T00:00:03.000Z")
        + _marker("a", "a0", "2026-01-01T00:00:00.500Z")
        + "</ListVersionsResult>"
    ).encode()
    entries = parse_list_versions(body).entries
    assert [v.version_id for v in entries] == ["a3", "a2", "a1", "a0", "b1"]


def test_url_encoded_keys_are_decoded() -> None:
    body = (
        f"<ListVersionsResult {NS}><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>"
        + _version("with+space%2B%25/%C3%BC", "1", "2026-01-01T00:00:00Z")
        + "</ListVersionsResult>"
    ).encode()
    assert parse_list_versions(body).entries[0].key == "with space+%/ü"


@pytest.mark.anyio
async def test_limiter_halves_on_throttling_and_recovers_one_by_one() -> None:
    lim = AdaptiveLimiter(32, floor=2)
    assert lim.limit == 32
    lim.on_throttle()
    lim.on_throttle()  # a burst of throttles within a second counts once
    assert lim.limit == 16
    for _ in range(16):
        lim.on_success()
    assert lim.limit == 17
    for _ in range(200):
        async with lim:
            lim.on_success()
    assert lim.limit <= 32
    await anyio.lowlevel.checkpoint()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    "command", [[], ["copy"], ["verify"], ["status"], ["demo"], ["run-shards"], ["setup"], ["setup", "plan"]]
)
def test_every_help_text_renders(command: list[str]) -> None:
    """Help texts hold s3://BUCKET[/PREFIX]: nothing may read that as markup and crash."""
    from typer.testing import CliRunner

    from backfill.cli import app

    r = CliRunner().invoke(app, [*command, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output
