"""Where moto's S3 answers differently from AWS in a way the tests depend on, moto is made to answer as AWS does.

One fix so far: ListObjectVersions with a key-marker and no version-id-marker.

- AWS: the listing begins after every version of the key-marker (the key need not exist): "key-marker:
  Specifies the key to start with when listing objects in a bucket" and, for a truncated answer,
  "NextKeyMarker ... specifies the first key not returned" (Amazon S3 API Reference, ListObjectVersions).
  Other S3 servers were fixed to the same reading: versity/versitygw#2178 shows AWS answering a listing
  with key-marker = the first of two keys with the second key alone.
- moto 5.2.5 (`S3Backend.list_object_versions`) skips the versions of keys before the marker and then
  also the first version it reaches: the newest version of the marker key when it exists (its older
  versions are listed), or the first version of the next key when it does not. A shard of backfill
  starts its listing with its lower bound as key-marker (pipeline/lister.py), a common prefix such as
  "logs/b/", so on moto the first version of every shard but the first was lost (docs/testbed-facts.md).

The fix asks moto for the same listing with the version-id-marker that AWS's reading implies: the
oldest version of the last key at or before the marker, which moto skips through exactly.
"""

from __future__ import annotations

import itertools
from typing import Any

_FIXED = "_backfill_testbed_key_marker_fixed"


def fix_key_marker() -> None:
    """Patch moto's S3 backend class in this process (idempotent)."""
    from moto.core.utils import unix_time_millis
    from moto.s3.models import S3Backend

    if getattr(S3Backend, _FIXED, False):
        return
    original = S3Backend.list_object_versions

    def list_object_versions(
        self: Any,
        bucket_name: str,
        delimiter: str | None = None,
        key_marker: str | None = None,
        max_keys: int | None = 1000,
        prefix: str = "",
        version_id_marker: str | None = None,
    ) -> Any:
        if key_marker and not version_id_marker and not delimiter:
            bucket = self.get_bucket(bucket_name)
            # moto's own order of every version (name, then newest first)
            every = sorted(
                itertools.chain(*(v for _k, v in bucket.keys.iterlists())),
                key=lambda r: (r.name, -unix_time_millis(r.last_modified)),
            )
            before = [v for v in every if v.name <= key_marker]
            if before:
                key_marker, version_id_marker = before[-1].name, before[-1].version_id
            else:
                key_marker = None  # nothing at or before the marker: the listing starts at the beginning
        return original(
            self,
            bucket_name,
            delimiter=delimiter,
            key_marker=key_marker,
            max_keys=max_keys,
            prefix=prefix,
            version_id_marker=version_id_marker,
        )

    S3Backend.list_object_versions = list_object_versions  # type: ignore[method-assign]
    setattr(S3Backend, _FIXED, True)
