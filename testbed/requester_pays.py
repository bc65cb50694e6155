"""A Requester Pays source bucket, as another account's principal sees it (neither local server enforces it).

    with Threaded(RequesterPaysProxy(seaweed_url, access_key=..., secret_key=..., buckets={src})) as rp:
        backfill copy … --endpoint-url rp.endpoint_url [--request-payer requester]

AWS ("Downloading objects from Requester Pays buckets", S3 User Guide,
https://docs.aws.amazon.com/AmazonS3/latest/userguide/ObjectsinRequesterPaysBuckets.html): requesters
"must include x-amz-request-payer : requester in the header" of DELETE, GET, HEAD, POST and PUT
requests; "If x-amz-request-payer is not in the request, Amazon S3 returns a 403 error"; a request that
succeeds and is charged gets `x-amz-request-charged: requester` back. Bucket owners need no header: every
request through this proxy stands for the replica account's principal, which is not the owner. The 403
is S3's plain AccessDenied ("Access Denied"), which names no cause (the AWS CLI shows "Forbidden" for a
HEAD, which has no body: boto/boto3#4138).

A request counts as touching a Requester Pays bucket when its path names one, or its
x-amz-copy-source does (CopyObject and UploadPartCopy read the source: the copying request must carry
the header, S3 API reference, CopyObject / x-amz-request-payer).

Stricter than AWS, on purpose: every request to the bucket needs the header here, bucket-configuration
reads (HeadBucket, GetBucketVersioning, GetObjectLockConfiguration) included, whose botocore models have
no RequestPayer member. How AWS answers those without it was not verified; a client that passes this
proxy passes either way.
"""

from __future__ import annotations

import urllib.parse
from collections import Counter

from testbed.s3http import Message, S3Proxy, s3_error_response


class RequesterPaysProxy(S3Proxy):
    def __init__(self, upstream: str, *, access_key: str, secret_key: str, buckets: set[str]) -> None:
        super().__init__(upstream, access_key=access_key, secret_key=secret_key)
        self.buckets = buckets
        self.refused: Counter[str] = Counter()  # "METHOD bucket" of every refused request
        self.charged = 0

    def _touches(self, req: Message) -> str | None:
        bucket, _ = req.bucket_key
        if bucket in self.buckets:
            return bucket
        src = req.get("x-amz-copy-source")
        if src:
            b = urllib.parse.unquote(src.lstrip("/").partition("/")[0])
            if b in self.buckets:
                return b
        return None

    async def on_request(self, req: Message) -> Message | None:
        bucket = self._touches(req)
        if bucket is None or (req.get("x-amz-request-payer") or "").lower() == "requester":
            return None
        self.refused[f"{req.method} {bucket}"] += 1
        resp = s3_error_response(403, "Forbidden", "AccessDenied", "Access Denied")
        if req.method == "HEAD":
            resp.body = b""
        return resp

    async def on_response(self, req: Message, resp: Message) -> Message:
        if self._touches(req) is not None and resp.status < 300:
            resp.set("x-amz-request-charged", "requester")
            self.charged += 1
        return resp
