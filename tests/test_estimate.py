"""The estimate: request counts as the copier sends them, dollars from the price table, hours from the rates.

The dollar figures are recomputed here from the JSON files themselves (the shipped table read
as a file, and a --prices file this test writes), so a change of the table or of the
arithmetic shows.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from backfill.config import CopyOptions, GiB, MiB
from backfill.errors import UserError
from backfill.estimate import (
    GB,
    Layout,
    Requests,
    Tally,
    Timing,
    estimate,
    even_parts,
    list_pages,
    load_prices,
    version_requests,
)
from backfill.models import Version
from backfill.s3 import Copier

SHIPPED = json.loads((Path(__file__).parent.parent / "backfill" / "prices.json").read_text())


def v(key: str, size: int, etag: str = "d41d8cd98f00b204e9800998ecf8427e", sc: str = "", dm: bool = False) -> Version:
    return Version(key, f"v-{key}-{size}", 0 if dm else size, "" if dm else etag, "2026-01-01T00:00:00.000Z", dm, sc)


def test_requests_of_one_version_follow_the_copier() -> None:
    layout = Layout(multipart_threshold=8 * MiB, part_size=5 * MiB)
    dm = version_requests(v("k", 0, dm=True), layout)
    assert (dm.delete, dm.copy, dm.total) == (1, 0, 1)
    small = version_requests(v("k", 8 * MiB), layout)  # at the threshold: one CopyObject
    assert (small.copy, small.head, small.upload_part_copy) == (1, 0, 0)
    # Above it, with a source of 3 parts (ETag "-3"): HEAD, HEAD PartNumber=1..3, tagging, create, 3 parts, complete
    mp = version_requests(v("k", 12 * MiB, etag="0123456789abcdef0123456789abcdef-3"), layout)
    assert (mp.head, mp.get_tagging, mp.create_multipart, mp.upload_part_copy, mp.complete_multipart) == (4, 1, 1, 3, 1)
    assert mp.copy == 0
    # A single-PUT source (plain MD5 ETag): HEAD, HEAD PartNumber=1, then --part-size parts (12 MiB / 5 MiB = 3)
    single = version_requests(v("k", 12 * MiB), layout)
    assert (single.head, single.upload_part_copy) == (2, 3)
    locked = version_requests(v("k", 1), Layout(carry_lock=True))
    assert (locked.copy, locked.head) == (1, 1)


def test_kms_requests_per_copy_and_per_part() -> None:
    layout = Layout(multipart_threshold=8 * MiB, part_size=5 * MiB)
    small, big = v("a", 100), v("b", 12 * MiB, etag="0123456789abcdef0123456789abcdef-3")
    assert version_requests(small, layout, source_kms=True).kms == 1  # Decrypt of the source
    assert version_requests(small, layout, dest_kms=True).kms == 1  # GenerateDataKey for the replica
    assert version_requests(small, layout, source_kms=True, dest_kms=True).kms == 2
    # 3 parts: 3 Decrypts of the source; GenerateDataKey at create + 3 Decrypts of the upload's key
    assert version_requests(big, layout, source_kms=True).kms == 3
    assert version_requests(big, layout, dest_kms=True).kms == 4
    assert version_requests(v("dm", 0, dm=True), layout, source_kms=True, dest_kms=True).kms == 0


@pytest.mark.parametrize("total", [1, 5 * MiB - 1, 5 * MiB, 5 * MiB + 1, 12 * MiB, 6 * GiB, 5_000 * GiB])
@pytest.mark.parametrize("part_size", [5 * MiB, 512 * MiB])
def test_even_parts_counts_what_the_copier_splits(total: int, part_size: int) -> None:
    copier = Copier.__new__(Copier)  # _even_parts reads only the options
    copier.options = CopyOptions(part_size=part_size)
    assert even_parts(total, part_size) == len(copier._even_parts(total))


def _tally() -> Tally:
    """1,000 small STANDARD objects, 10 large (2 GiB, 4 parts) STANDARD_IA ones, 50 delete markers."""
    t = Tally(Layout(multipart_threshold=1 * GiB, part_size=512 * MiB))
    for i in range(1000):
        t.add(v(f"s{i}", 1 * MiB))
    for i in range(10):
        t.add(v(f"l{i}", 2 * GiB, etag="0123456789abcdef0123456789abcdef-4", sc="STANDARD_IA"))
    for i in range(50):
        t.add(v(f"d{i}", 0, dm=True))
    t.list_requests = 3
    return t


def _price(region: str, cls: str, tier: str, table: dict[str, object]) -> float:
    regions = table["regions"]
    assert isinstance(regions, dict)
    for r in (regions[region], regions["us-east-1"]):
        if cls in r["requests"]:
            return float(r["requests"][cls][tier]) / 1000
    return float(regions[region]["requests"]["STANDARD"][tier]) / 1000


def test_dollars_follow_from_the_shipped_table() -> None:
    t = _tally()
    e = estimate(t, load_prices(), "us-east-1", "eu-central-1")
    r = e.requests
    assert r["copy"] == 1000 and r["delete"] == 50 and r["list"] == 3
    assert (r["head"], r["get_tagging"], r["create_multipart"], r["upload_part_copy"], r["complete_multipart"]) == (
        50,
        10,
        10,
        40,
        10,
    )
    assert e.bytes_copied == 1000 * MiB + 20 * GiB == e.cross_region_bytes
    want_requests = (
        3 * _price("us-east-1", "STANDARD", "tier1", SHIPPED)  # LIST, in the source region
        + 1000 * _price("eu-central-1", "STANDARD", "tier1", SHIPPED)  # CopyObject, replica region
        + (10 + 40 + 10) * _price("eu-central-1", "STANDARD_IA", "tier1", SHIPPED)  # create, parts, complete
        + (50 + 10) * _price("us-east-1", "STANDARD_IA", "tier2", SHIPPED)  # HEADs and tagging of the large ones
    )
    transfer = SHIPPED["regions"]["us-east-1"]["transfer_per_gb"]
    retrieval = SHIPPED["regions"]["us-east-1"]["retrieval_per_gb"]["STANDARD_IA"]
    assert e.usd["requests"] == round(want_requests, 2)
    assert e.usd["transfer"] == round((1000 * MiB + 20 * GiB) / GB * transfer, 2)
    assert e.usd["retrieval"] == round(20 * GiB / GB * retrieval, 2)
    assert e.usd["kms"] == 0
    assert e.usd["total"] == round(want_requests + (1000 * MiB + 20 * GiB) / GB * transfer + 20 * retrieval, 2)
    assert e.prices["region"] == "us-east-1->eu-central-1" and e.prices["as_of"] == SHIPPED["as_of"]
    assert e.prices["source"] == SHIPPED["source"]
    # us-east-1 -> us-east-2 is the documented $0.01/GB pair
    near = estimate(t, load_prices(), "us-east-1", "us-east-2")
    assert near.usd["transfer"] == round((1000 * MiB + 20 * GiB) / GB * 0.01, 2)
    same = estimate(t, load_prices(), "us-east-1", "us-east-1")
    assert same.cross_region_bytes == 0 and same.usd["transfer"] == 0


def test_a_prices_file_replaces_the_table_and_kms_is_charged(tmp_path: Path) -> None:
    f = tmp_path / "prices.json"
    f.write_text(
        json.dumps(
            {
                "source": "our negotiated rates",
                "as_of": "2026-11-01",
                "kms_per_10k": 0.05,
                "regions": {
                    "xx-test-1": {
                        "requests": {"STANDARD": {"tier1": 0.01, "tier2": 0.001}},
                        "transfer_per_gb": 0.5,
                        "transfer_to": {"xx-test-2": 0.25},
                    },
                    "xx-test-2": {"requests": {"STANDARD": {"tier1": 0.02, "tier2": 0.002}}, "transfer_per_gb": 1},
                },
            }
        )
    )
    t = Tally(Layout(), dest_kms=True, source_kms=True)
    for i in range(10_000):
        t.add(v(f"k{i}", GiB // 10))
    t.add(v("dm", 0, dm=True))
    t.list_requests = 11
    prices = load_prices(str(f))
    e = estimate(t, prices, "xx-test-1", "xx-test-2")
    assert e.requests["kms"] == 20_000  # a Decrypt and a GenerateDataKey per CopyObject
    assert e.usd["kms"] == round(20_000 * 0.05 / 10_000, 2) == 0.1
    assert e.usd["requests"] == round(11 * 0.01 / 1000 + 10_000 * 0.02 / 1000, 2)
    assert e.usd["transfer"] == round(10_000 * (GiB // 10) / GB * 0.25, 2)
    assert e.prices == {"region": "xx-test-1->xx-test-2", "source": "our negotiated rates", "as_of": "2026-11-01",
                        "table": f"--prices {f}"}  # fmt: skip
    # the shipped regions are still there, under the file's
    assert estimate(t, prices, "us-east-1", "us-east-1").usd["requests"] > 0


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "not JSON"),
        ('{"regions": {}}', "needs an object with 'regions'"),
        ('{"regions": {"r": {"requests": {}}}}', "needs requests.STANDARD.tier1"),
        ('{"regions": {"r": {"requests": {"STANDARD": {"tier1": "x", "tier2": 1}}, "transfer_per_gb": 1}}}', "numbers"),
    ],
)
def test_a_bad_prices_file_is_refused_in_one_line(tmp_path: Path, content: str, says: str) -> None:
    f = tmp_path / "p.json"
    f.write_text(content)
    with pytest.raises(UserError, match=says) as exc:
        load_prices(str(f))
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="cannot read it"):
        load_prices(str(tmp_path / "missing.json"))


def test_a_region_without_prices_is_refused() -> None:
    with pytest.raises(UserError, match=r"no prices for region 'mars-1'.*--prices FILE"):
        estimate(_tally(), load_prices(), "mars-1", "us-east-1")


def test_hours_are_bound_by_the_slowest_constraint() -> None:
    t = Tally()
    for i in range(700_000):
        t.add(v(f"k{i}", 1000))
    prices = load_prices()
    # 700,000 CopyObjects at 3,500/s on one prefix: 200 s; at 256 in flight and 50 ms: 136.7 s
    e = estimate(t, prices, "us-east-1", "us-east-1", Timing(concurrency=256, latency=0.05, copy_rate=1e12))
    assert e.bound_by == "replica writes/prefix"
    assert e.seconds_by["replica writes/prefix"] == 200.0
    assert math.isclose(e.seconds_by["concurrency"], 700_000 * 0.05 / 256, rel_tol=1e-3)
    assert e.hours == round(200 / 3600, 4)
    # four prefixes lift that bound; then the copiers are the bound
    e4 = estimate(
        t, prices, "us-east-1", "us-east-1", Timing(concurrency=256, latency=0.05, prefixes=4, copy_rate=1e12)
    )
    assert e4.bound_by == "concurrency"
    # --max-rps 100: 7,000 s
    capped = estimate(t, prices, "us-east-1", "us-east-1", Timing(max_rps=100))
    assert capped.bound_by == "max-rps" and capped.seconds_by["max-rps"] == 7000.0
    # large objects: the bytes at the copy rate dominate
    big = Tally()
    big.add(v("big", 100 * GiB, etag="0123456789abcdef0123456789abcdef-200"))
    slow = estimate(big, prices, "us-east-1", "us-east-1", Timing(concurrency=1, copy_rate=100 * MiB))
    assert slow.bound_by == "concurrency" and slow.seconds_by["concurrency"] >= 1024


def test_list_pages_for_a_bucket_not_listed() -> None:
    assert list_pages(0, 1) == 1
    assert list_pages(100, 1) == 1  # the first page holds 100
    assert list_pages(101, 1) == 2
    assert list_pages(1100, 1) == 2
    assert list_pages(100_000_000, 64) == 64 * (1 + math.ceil((100_000_000 / 64 - 100) / 1000))


def test_the_one_line_and_the_json_shape() -> None:
    e = estimate(_tally(), load_prices(), "us-east-1", "eu-central-1")
    j = json.loads(json.dumps(e.to_json()))
    for k in ("list", "head", "copy", "upload_part_copy", "delete"):
        assert isinstance(j["requests"][k], int)
    for k in ("requests", "transfer", "kms", "total"):
        assert isinstance(j["usd"][k], float | int)
    assert set(j["prices"]) >= {"region", "source", "as_of"}
    assert isinstance(j["hours"], float) and j["bytes_copied"] == e.bytes_copied
    line = e.one_line()
    assert line.startswith("estimate: 1,060 versions to copy (50 delete markers)")
    assert f"${e.usd['total']:,.2f}" in line and "\n" not in line
    assert "remaining" not in line
    assert any("upload_part_copy" in ln for ln in e.lines())


def test_eta_on_a_known_total_and_on_one_estimated_from_the_shards() -> None:
    from backfill.eta import estimated_total, eta

    known = eta(250, 10.0, known_total=1000)  # 25 versions/s, 750 left
    assert (known.total, known.estimated, known.seconds) == (1000, False, 30.0)
    assert known.text() == "ETA 30s"
    listed = eta(100, 10.0, listed=400, listing_done=True)
    assert (listed.total, listed.estimated, listed.seconds) == (400, False, 30.0)
    # 4 shards: 0 and 1 finished with 100 and 300 versions (mean 200), 2 has 50 so far, 3 has 350 so far
    assert estimated_total({0: 100, 1: 300, 2: 50, 3: 350}, {0, 1}, 4) == 100 + 300 + 200 + 350
    guess = eta(95, 19.0, listed=800, listed_by_shard={0: 100, 1: 300, 2: 50, 3: 350}, finished_shards={0, 1}, shards=4)
    assert (guess.total, guess.estimated, guess.seconds) == (950, True, 171.0)
    assert guess.text() == "ETA ~2m51s (total estimated from the shards listed)"
    early = eta(10, 1.0, listed=10, listed_by_shard={0: 10}, finished_shards=(), shards=2)
    assert early.total is None and early.seconds is None and "unknown" in early.text()
    assert eta(0, 0.0, known_total=5).text() == "ETA after the first copies"


def test_requests_add_adds_every_kind() -> None:
    """Requests.add names its fields one by one (it runs once per listed version): none may be left out."""
    one = Requests(**{f.name: n + 1 for n, f in enumerate(dataclasses.fields(Requests))})
    total = Requests()
    total.add(one)
    total.add(one)
    assert dataclasses.asdict(total) == {k: 2 * v for k, v in dataclasses.asdict(one).items()}
