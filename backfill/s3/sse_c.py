"""SSE-C: objects encrypted with a key the customer holds and S3 never stores.

S3 reads or writes such an object only when every request carries the key
(S3 User Guide, "Using server-side encryption with customer-provided keys (SSE-C)"):
`x-amz-server-side-encryption-customer-algorithm: AES256`, `-customer-key` (the 256-bit key, base64) and
`-customer-key-MD5` (base64 of the key's MD5), and for the source of CopyObject / UploadPartCopy the
same three as `x-amz-copy-source-server-side-encryption-customer-…`. HeadObject of an SSE-C object
without the key answers 400; CopyObject refuses it (InvalidRequest).

The key is read from a file (`--source-sse-c-key FILE`, `--dest-sse-c-key FILE`): 32 raw bytes, or their
base64 (44 characters). It is kept in memory only: never logged, never in the manifest, the state or a
report (its repr is redacted).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import Any

from backfill.errors import UserError

ALGORITHM = "AES256"
KEY_BYTES = 32
SSE_C = "SSE-C"  # ObjectError.code of a version that needs a customer key this run does not have
# Why such a source version is skipped (schema.RETRY_PREFIXES: a later run retries it).
SKIPPED_WHY = "SSE-C encrypted: pass --source-sse-c-key FILE with its customer key, then run again"


def refused_for_key(code: str) -> bool:
    """Whether an error code may be S3 refusing an SSE-C object for want of its key: HeadObject answers
    400 (no body), CopyObject / UploadPartCopy InvalidRequest."""
    return code in ("400", "BadRequest", "InvalidRequest", "InvalidArgument")


class CustomerKey:
    __slots__ = ("_key", "md5")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("an SSE-C key is 32 bytes")
        self._key = key
        self.md5 = base64.b64encode(hashlib.md5(key).digest()).decode()  # noqa: S324 - S3's key check, not security

    def __repr__(self) -> str:
        return f"CustomerKey(md5={self.md5})"

    def headers(self, *, copy_source: bool = False) -> dict[str, str]:
        """The three headers (the lean path's requests)."""
        p = (
            "x-amz-copy-source-server-side-encryption-customer-"
            if copy_source
            else "x-amz-server-side-encryption-customer-"
        )
        return {p + "algorithm": ALGORITHM, p + "key": base64.b64encode(self._key).decode(), p + "key-MD5": self.md5}

    def params(self, *, copy_source: bool = False) -> dict[str, Any]:
        """botocore's parameters (it base64-encodes the key and adds its MD5)."""
        p = "CopySourceSSECustomer" if copy_source else "SSECustomer"
        return {p + "Algorithm": ALGORITHM, p + "Key": self._key}


def read_key(path: str, option: str) -> CustomerKey:
    """The key in `path` (for `option`), or one line saying what is wrong with the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {option} {path}: {exc.strerror or exc}") from None
    if len(data) == KEY_BYTES:
        return CustomerKey(data)
    text = data.strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == KEY_BYTES:
        return CustomerKey(raw)
    raise UserError(
        f"{option} {path} holds no SSE-C key: it must hold the 256-bit key, "
        "as 32 raw bytes or their base64 (44 characters)"
    )
