"""Before a run: can the copying principal decrypt the source's SSE-KMS objects?

Copies are sent by the replica's principal (`--dest-profile`). For an SSE-KMS source version S3 then
decrypts with the version's KMS key on that principal's behalf, which another account may do only if
the key's policy grants it `kms:Decrypt` (and its own IAM policy allows it); the AWS-managed `aws/s3`
key's policy cannot be changed, so objects under it cannot be copied by another account at all (AWS
re:Post, "Why do cross-account users receive Access Denied errors when they try to access my S3 objects
that I encrypted with an AWS KMS customer managed key?"). S3 reports the denial as AccessDenied with
KMS's message ("The ciphertext refers to a customer master key that does not exist, does not exist in
this region, or you are not allowed to access.", seen on GetObject in
ministryofjustice/modernisation-platform#3468).

The check: HEAD the first versions of the first listing page (at once, on the lean path); for the first
SSE-KMS one, one ranged GET of its first byte as the copying principal. A denial naming KMS stops the run
with one line naming the key and the grant. Anything else is left to the run (which reports it as it happens).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import anyio

from backfill.config import RunConfig
from backfill.errors import AccessDenied, BackfillError, UserError, is_kms_denial
from backfill.models import Version
from backfill.pacing import Pacer, RateLimiter
from backfill.s3 import Bucket, Sessions, VersionPage, open_bucket

SAMPLE = 10  # object versions HEADed at most


async def kms_preflight(cfg: RunConfig, src: Bucket, sessions: Sessions, page: VersionPage | None = None) -> int:
    """Look at the first versions (HEAD, at most SAMPLE, all at once) and probe the first SSE-KMS one; the HEADs
    sent. `page`: the source's first listing page, if the caller has it (sides.preflight lists it)."""
    if cfg.inventory is not None:
        return 0  # the job is read from a report, not a listing (a KMS denial is still named as such mid-run)
    if page is None:
        page = await src.list_versions(cfg.source.url.prefix, None, None, max_keys=50)
    sample = [v for v in page.entries if not v.is_delete_marker and v.size > 0][:SAMPLE]
    found: list[tuple[str, str] | None] = [None] * len(sample)

    async def look(i: int, v: Version) -> None:
        with contextlib.suppress(BackfillError):  # not for this check to report
            found[i] = await src.encryption(v.key, v.version_id)

    async with anyio.create_task_group() as tg:
        for i, v in enumerate(sample):
            tg.start_soon(look, i, v)
    for v, enc in zip(sample, found, strict=True):
        if enc is not None and enc[0] in ("aws:kms", "aws:kms:dsse"):
            await _probe(cfg, v.key, v.version_id, enc[1] or "its KMS key", sessions)
            break
    return len(sample)


async def _probe(cfg: RunConfig, key: str, version_id: str, key_id: str, sessions: Sessions) -> None:
    """One ranged GET of the version by the copying principal (the replica's credentials, the source's
    region and endpoint)."""
    side = dataclasses.replace(cfg.source, profile=cfg.dest.profile, lean=False)
    who = f"profile {cfg.dest.profile}" if cfg.dest.profile else "the default credentials"
    denial: AccessDenied | None = None
    try:
        async with open_bucket(side, "source", Pacer(None, RateLimiter(None)), pool=2, sessions=sessions) as b:
            try:
                r: Any = await b.call(
                    f"GetObject s3://{b.name}/{key}",
                    "get_object",
                    Bucket=b.name,
                    Key=key,
                    VersionId=version_id,
                    Range="bytes=0-0",
                )
                r["Body"].close()
            except AccessDenied as exc:
                denial = exc
    except BackfillError:
        return  # this principal may not open the source bucket itself (HeadBucket): the copies will tell
    if denial is not None and is_kms_denial(str(denial)):
        raise UserError(
            f"the copying principal ({who}) may not decrypt s3://{cfg.source.url.bucket}/{key}, encrypted with "
            f"SSE-KMS key {key_id}: grant it kms:Decrypt in that key's policy (and in its own IAM policy); if "
            "it is the AWS-managed aws/s3 key, which no other account can use, re-encrypt the objects in the "
            "source account with a customer-managed key, or run the copy as a principal of the source account "
            "that may write the replica"
        )
