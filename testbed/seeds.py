"""Seeded bucket contents shared by several test modules (the torture test seeds its own: testbed/torture.py)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from testbed.store import Store

DIRS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]


def seed_histories(store: Store, bucket: str, keys: int, seed: int = 7) -> dict[str, int]:
    """Keys in a few "directories", each with 1–4 versions, some deleted, some deleted and rewritten.

    moto lists all versions before all delete markers, and stamps markers more coarsely than
    versions, so no client can read a faithful interleaved history from it: no markers there.
    """
    markers = store.name != "moto"
    rng = random.Random(seed)
    c = store.client
    counts = {"versions": 0, "delete_markers": 0}
    for i in range(keys):
        key = f"{rng.choice(DIRS)}/{rng.choice(['x', 'y'])}/obj-{i:04d}"
        for v in range(rng.choice([1, 1, 2, 3, 4])):
            c.put_object(Bucket=bucket, Key=key, Body=f"{key} version {v} {'#' * rng.randrange(64)}".encode())
            counts["versions"] += 1
        if markers and rng.random() < 0.2:
            c.delete_object(Bucket=bucket, Key=key)
            counts["delete_markers"] += 1
            if rng.random() < 0.5:
                c.put_object(Bucket=bucket, Key=key, Body=b"rewritten after a delete")
                counts["versions"] += 1
    return counts


def seed_many(store: Store, bucket: str, keys: int) -> int:
    """`keys` keys in 10 directories; every 10th has two versions and every 25th a delete marker."""
    c = store.client

    def one(i: int) -> int:
        key = f"d{i % 10}/k{i:05d}"
        n = 0
        for v in range(2 if i % 10 == 0 else 1):
            c.put_object(Bucket=bucket, Key=key, Body=f"{key} v{v}".encode())
            n += 1
        if i % 25 == 0:
            c.delete_object(Bucket=bucket, Key=key)
            n += 1
        return n

    with ThreadPoolExecutor(16) as pool:
        return sum(pool.map(one, range(keys)))
