"""SSE-KMS as a client sees it, in front of a server that has none: objects with ETags that are not MD5s.

    with Threaded(KmsEtagProxy(seaweed_url, access_key=..., secret_key=..., buckets={dst})) as kms:
        backfill copy … --dest-endpoint-url kms.endpoint_url

What AWS does, and this proxy shows (for the objects of `buckets`):

- "Objects created by the PUT Object, POST Object, or Copy operation … and are encrypted by SSE-C or
  SSE-KMS, have ETags that are not an MD5 digest of their object data"; multipart ones are not MD5s
  either, whatever the encryption (S3 API reference, Object / ETag:
  https://docs.aws.amazon.com/AmazonS3/latest/API/API_Object.html). A copy under KMS is encrypted
  with a new data key, so the replica's ETag differs from the source's even for equal content.
  Here every object version gets an opaque 32-hex ETag derived from (bucket, key, version ID) and a
  secret, keeping a multipart ETag's "-N": the same version always shows the same ETag — in
  ListObjectVersions, ListObjectsV2, HEAD, GET, GetObjectAttributes, PutObject, CopyObject,
  CompleteMultipartUpload — and two versions never share one. Parts (UploadPart, UploadPartCopy) get
  opaque part ETags the same way.
- Conditional requests name the ETag the client saw: If-Match / If-None-Match and
  x-amz-copy-source-if-match / -if-none-match, and the part ETags of CompleteMultipartUpload, are
  mapped back to the server's before forwarding (and the request signed again). An ETag this proxy
  never gave out is forwarded as it is (the server then refuses it, as S3 refuses a stale one).
- HEAD/GET/PUT/copy responses say `x-amz-server-side-encryption: aws:kms` with the key's ARN
  (`x-amz-server-side-encryption-aws-kms-key-id`), as S3 does for an SSE-KMS object.
- Checksums are of the plaintext, so KMS leaves them alone: they pass through. `checksums=False`
  strips them (x-amz-checksum-*, <Checksum…> elements), standing for objects written before S3 gave
  every new object a CRC64NVME checksum (S3 API reference, CopyObjectResult / ChecksumCRC64NVME:
  "present … if the object was uploaded without a checksum (and Amazon S3 added the default checksum,
  CRC64NVME …)"): an old SSE-KMS object has neither an MD5 ETag nor a checksum.

- `deny_decrypt=True`: the client's principal lacks `kms:Decrypt` on the objects' key (another account
  not granted in the key policy, or the AWS-managed aws/s3 key): GetObject and copies out of these buckets
  are refused with S3's AccessDenied carrying KMS's message; HEAD is not (it decrypts nothing).

Not emulated: KMS itself (keys, policies: see docs/testbed-facts.md for moto's KMS), ListParts' part
ETags, virtual-host addressing.
"""

from __future__ import annotations

import hashlib
import html
import re
import urllib.parse

from testbed.s3http import Message, S3Proxy, s3_error_response

KEY_ARN = "arn:aws:kms:us-east-1:111111111111:key/0b1f4a52-5c2f-4d0e-9a7e-6f1d2c3b4a59"

# What S3 answers a principal without kms:Decrypt on the object's key, for GetObject and a copy's source
# (seen on GetObject in ministryofjustice/modernisation-platform#3468; HEAD needs no decryption).
KMS_DENIED = (
    "The ciphertext refers to a customer master key that does not exist, does not exist in this region, "
    "or you are not allowed to access."
)
NEVER = "ffffffffffffffffffffffffffffffff"  # a condition on an ETag never given out
_ENTRY = re.compile(r"<(Version|Contents)>(.*?)</\1>", re.S)
_ETAG = re.compile(r"<ETag>(.*?)</ETag>", re.S)
_RESULTS = re.compile(rb"<(CopyObjectResult|CopyPartResult|CompleteMultipartUploadResult|GetObjectAttributes)")
_CHECKSUM_EL = re.compile(r"<(Checksum(?:CRC32C?|CRC64NVME|SHA1|SHA256|Type|Algorithm))>[^<]*</\1>")


def _field(text: str, tag: str) -> str:
    m = re.search(f"<{tag}>([^<]*)</{tag}>", text)
    return html.unescape(m.group(1)) if m else ""


def _bare(etag: str) -> str:
    return html.unescape(etag.replace("&#34;", '"').replace("&quot;", '"')).strip().strip('"')


class KmsEtagProxy(S3Proxy):
    def __init__(
        self,
        upstream: str,
        *,
        access_key: str,
        secret_key: str,
        buckets: set[str] | None = None,
        checksums: bool = True,
        secret: str = "kms-test-bed",
        deny_decrypt: bool = False,
    ) -> None:
        super().__init__(upstream, access_key=access_key, secret_key=secret_key)
        self.buckets = buckets  # None: every bucket
        self.checksums = checksums
        self.deny_decrypt = deny_decrypt  # the client's principal lacks kms:Decrypt on the key
        self.denied = 0
        self.secret = secret
        self.real_of: dict[str, str] = {}  # opaque ETag given out → the server's
        self.rewritten = 0  # ETags given out, for tests to see that the proxy did its work

    def _ours(self, bucket: str) -> bool:
        return bool(bucket) and (self.buckets is None or bucket in self.buckets)

    def opaque(self, real: str, *parts: str) -> str:
        """The ETag this proxy shows for `real`, identified by `parts` (bucket, key, version or upload, part)."""
        real = _bare(real)
        if not real:
            return real
        suffix = "-" + real.partition("-")[2] if "-" in real else ""
        fake = hashlib.md5("|".join((self.secret, *parts)).encode()).hexdigest() + suffix
        self.real_of[fake] = real
        self.rewritten += 1
        return fake

    # --- requests: opaque ETags back to the server's --------------------------------------------

    def _back(self, value: str) -> str:
        """Opaque ETags in a condition → the server's; an ETag this proxy never gave out matches nothing
        (under SSE-KMS the object's MD5 is not its ETag)."""
        out = []
        for tag in value.split(","):
            t = _bare(tag)
            out.append(f'"{self.real_of.get(t, NEVER)}"')
        return ", ".join(out)

    async def on_request(self, req: Message) -> Message | None:
        bucket, key = req.bucket_key
        src = req.get("x-amz-copy-source") or ""
        src_bucket = urllib.parse.unquote(src.lstrip("/").partition("/")[0])
        reads = (req.method == "GET" and key and not req.query.keys() - {"versionId", "partNumber"}) or src
        if self.deny_decrypt and reads and self._ours(src_bucket if src else bucket):
            self.denied += 1
            return s3_error_response(403, "Forbidden", "AccessDenied", KMS_DENIED)
        for h, b in (
            ("if-match", bucket),
            ("if-none-match", bucket),
            ("x-amz-copy-source-if-match", src_bucket),
            ("x-amz-copy-source-if-none-match", src_bucket),
        ):
            v = req.get(h)
            if v and v.strip() != "*" and self._ours(b):
                new = self._back(v)
                if new != v:
                    req.set(h, new)
                    req.resign = True
        if req.method == "POST" and "uploadId" in req.query and req.body and self._ours(bucket):
            text = req.body.decode()
            new = _ETAG.sub(lambda m: f"<ETag>{self._back(html.unescape(m.group(1)))}</ETag>", text)
            if new != text:
                req.body = new.encode()
                req.remove("content-md5")
                for k, _ in list(req.headers):
                    if k.lower().startswith("x-amz-checksum-") and k.lower() != "x-amz-checksum-type":
                        req.remove(k)
                req.resign = True
        return None

    # --- responses: the server's ETags to opaque ones ------------------------------------------

    async def on_response(self, req: Message, resp: Message) -> Message:
        bucket, key = req.bucket_key
        if not self._ours(bucket):
            return resp
        q = req.query
        vid = resp.get("x-amz-version-id") or q.get("versionId") or "null"
        if not self.checksums:
            for k, _ in list(resp.headers):
                if k.lower().startswith("x-amz-checksum-"):
                    resp.remove(k)
            if resp.body:
                resp.body = _CHECKSUM_EL.sub("", resp.body.decode()).encode()
        if key:
            part = "partNumber" in q and "uploadId" in q
            ident = (bucket, key, "upload", q["uploadId"], q["partNumber"]) if part else (bucket, key, vid)
            etag = resp.get("etag")
            if etag:
                resp.set("ETag", f'"{self.opaque(etag, *ident)}"')
            if resp.body and resp.status < 300 and _RESULTS.search(resp.body[:300]):
                resp.body = _ETAG.sub(
                    lambda m: f"<ETag>&quot;{self.opaque(m.group(1), *ident)}&quot;</ETag>", resp.body.decode()
                ).encode()
            subresource = any(p in q for p in ("tagging", "acl", "retention", "legal-hold", "attributes"))
            sse_c = resp.get("x-amz-server-side-encryption-customer-algorithm")
            if resp.status < 300 and req.method != "DELETE" and not subresource and not sse_c:
                resp.set("x-amz-server-side-encryption", "aws:kms")
                resp.set("x-amz-server-side-encryption-aws-kms-key-id", KEY_ARN)
        elif req.method == "GET" and resp.status == 200 and resp.body:
            resp.body = (await self._listing(bucket, resp.body.decode())).encode()
        return resp

    async def _listing(self, bucket: str, doc: str) -> str:
        url = _field(doc, "EncodingType") == "url"
        out: list[str] = []
        last = 0
        for m in _ENTRY.finditer(doc):
            text = m.group(2)
            raw_key = re.search(r"<Key>([^<]*)</Key>", text)
            key = raw_key.group(1) if raw_key else ""
            key = urllib.parse.unquote_plus(key) if url else html.unescape(key)
            vid = _field(text, "VersionId") or (
                await self._current_version(bucket, key) if m.group(1) == "Contents" else "null"
            )
            ident = (bucket, key, vid)
            text = _ETAG.sub(lambda e, ident=ident: f"<ETag>&quot;{self.opaque(e.group(1), *ident)}&quot;</ETag>", text)
            out.append(doc[last : m.start()] + f"<{m.group(1)}>{text}</{m.group(1)}>")
            last = m.end()
        out.append(doc[last:])
        return "".join(out)

    async def _current_version(self, bucket: str, key: str) -> str:
        """ListObjectsV2 names no version: HEAD tells which version an entry is (the same ETag as HEAD shows)."""
        path = "/" + urllib.parse.quote(f"{bucket}/{key}", safe="/-._~")
        r = await self.exchange(Message(("HEAD", path), []))
        return r.get("x-amz-version-id") or "null"
