"""The only package that talks to S3.

    connect.py   how each side is reached (lean or botocore resolution), open_bucket
    sdk.py       aioboto3 sessions, the one botocore client factory and its retry policy (imported lazily)
    bucket.py    Bucket: access checks, bucket settings, listings, reads of one version
    copy.py      Copier: CopyObject, multipart UploadPartCopy, delete markers, aborted uploads
    listing.py   ListObjectVersions / ListObjectsV2 answers parsed from their XML, their queries
    wire.py      the lean path for the hot calls (Wire), on http1.py and sigv4.py

Clients come from aioboto3 sessions (AWS CLI conventions: profiles, regions,
AWS_ENDPOINT_URL). botocore's own retries are off; pacing.Pacer retries. A run
imports the SDK only when it needs it (connect.py says when).

The three requests a backfill sends by the million (CopyObject,
ListObjectVersions, DeleteObject for a delete marker) take a lean path, `Wire`:
signed by sigv4.py and sent by http1.py, with the credentials, region and
endpoint that botocore resolved for the same bucket. botocore's request
pipeline costs ~1.2 ms of CPU per call; the lean path a small fraction of it
(benchmarks/RESULTS.md). So do the preflight's few requests (HeadBucket,
GetBucketVersioning, GetObjectLockConfiguration, GetBucketReplication, the KMS
preflight's HeadObjects), so that a plain copy never loads the SDK. Everything
else, and every request when `--http botocore` is given, goes through aioboto3,
whose client a bucket opens on its first such request.

ListObjectVersions is read from the raw XML (a `before-parse` hook), because
botocore splits <Version> and <DeleteMarker> into two lists and so loses the
order of a key's history, which a replay needs.
"""

from backfill.s3.bucket import START_POLICY, Bucket, Landed
from backfill.s3.connect import (
    LIST_POOL,
    Sessions,
    ca_file,
    endpoint_from_env,
    new_session,
    open_bucket,
    open_client,
    reserve_open_files,
    who,
)
from backfill.s3.copy import Copier, UploadJournal
from backfill.s3.listing import (
    VersionPage,
    list_delimited_params,
    list_versions_params,
    parse_list_delimited,
    parse_list_versions,
)
from backfill.s3.sse_c import SKIPPED_WHY as SSE_C_SKIPPED_WHY
from backfill.s3.sse_c import SSE_C
from backfill.s3.wire import SLOWEST_COPY, Wire, copy_headers, copy_source_header

__all__ = [
    "LIST_POOL",
    "SLOWEST_COPY",
    "SSE_C",
    "SSE_C_SKIPPED_WHY",
    "START_POLICY",
    "Bucket",
    "Copier",
    "Landed",
    "Sessions",
    "UploadJournal",
    "VersionPage",
    "Wire",
    "ca_file",
    "copy_headers",
    "copy_source_header",
    "endpoint_from_env",
    "list_delimited_params",
    "list_versions_params",
    "new_session",
    "open_bucket",
    "open_client",
    "parse_list_delimited",
    "parse_list_versions",
    "reserve_open_files",
    "who",
]
