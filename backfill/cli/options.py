"""Option declarations that several commands share, each written once.

An option group is a dataclass whose fields are typer-annotated options; a
command takes it as one parameter, and `@options` spreads the group's fields into
the command's signature for typer (in the parameter's place, so --help keeps its
order) and gathers them back into the dataclass on the call:

    @options
    def verify(source: ..., dest: ..., sides: SideOptions, ...) -> None:
        src, dst = sides.build(source, dest)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, get_type_hints

import typer

from backfill.config import Side, check_account, check_endpoint, parse_s3_url
from backfill.errors import UserError
from backfill.s3 import endpoint_from_env

R = TypeVar("R")


def options(fn: Callable[..., R]) -> Callable[..., R]:
    """Spread each option-group parameter (a dataclass marked by `group`) into its fields, for typer."""
    hints = get_type_hints(fn, include_extras=True)
    params: list[inspect.Parameter] = []
    groups: dict[str, tuple[type[Any], list[str]]] = {}
    for p in inspect.signature(fn).parameters.values():
        kind = hints.get(p.name, p.annotation)
        if isinstance(kind, type) and getattr(kind, "__option_group__", False):
            field_hints = get_type_hints(kind, include_extras=True)
            names = []
            for f in dataclasses.fields(kind):
                default = f.default if f.default is not dataclasses.MISSING else inspect.Parameter.empty
                params.append(
                    inspect.Parameter(
                        f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=field_hints[f.name]
                    )
                )
                names.append(f.name)
            groups[p.name] = (kind, names)
        else:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=kind))

    @functools.wraps(fn)
    def command(**kwargs: Any) -> R:
        for name, (kind, names) in groups.items():
            kwargs[name] = kind(**{n: kwargs.pop(n) for n in names})
        return fn(**kwargs)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def group(cls: type[R]) -> type[R]:
    """Mark a frozen dataclass of options as a group that `@options` spreads."""
    cls.__option_group__ = True  # type: ignore[attr-defined]
    return cls


SourceProfile = Annotated[str | None, typer.Option("--source-profile", help="AWS profile that lists the source.")]
DestProfile = Annotated[
    str | None, typer.Option("--dest-profile", help="AWS profile that writes the replica (and reads the source).")
]
SourceRegion = Annotated[str | None, typer.Option("--source-region", help="Source bucket's region (detected).")]
DestRegion = Annotated[str | None, typer.Option("--dest-region", help="Replica bucket's region (detected).")]
Endpoint = Annotated[
    str | None, typer.Option("--endpoint-url", help="S3 endpoint for both sides (AWS_ENDPOINT_URL is honoured).")
]
SourceEndpoint = Annotated[str | None, typer.Option("--source-endpoint-url", help="S3 endpoint of the source.")]
DestEndpoint = Annotated[str | None, typer.Option("--dest-endpoint-url", help="S3 endpoint of the replica.")]
ReadTimeout = Annotated[
    float,
    typer.Option(
        "--read-timeout",
        help="Seconds a request may wait without a byte from the server before it is retried "
        "(a copy's limit grows with its size).",
    ),
]
Http = Annotated[
    str,
    typer.Option(
        "--http",
        help="lean: CopyObject, ListObjectVersions and DeleteObject on backfill's own signed HTTP/1.1 client "
        "(a fraction of botocore's CPU); botocore: every request through aioboto3.",
    ),
]
ExpectedSourceOwner = Annotated[
    str | None,
    typer.Option(
        "--expected-source-owner",
        help="The source bucket's account ID: every request says so (ExpectedBucketOwner, "
        "ExpectedSourceBucketOwner), and S3 refuses it if a mistyped name points at someone else's bucket.",
    ),
]
RequestPayer = Annotated[
    str | None,
    typer.Option(
        "--request-payer",
        help="requester: for a Requester Pays source, every request says that this account pays for it "
        "(x-amz-request-payer), as S3 requires of everyone but the bucket's owner.",
    ),
]
SourceSseCKey = Annotated[
    str | None,
    typer.Option(
        "--source-sse-c-key",
        help="A file holding the customer key (32 bytes, raw or base64) of the source's SSE-C versions; "
        "without it they are skipped. Never logged or stored.",
    ),
]
DestSseCKey = Annotated[
    str | None,
    typer.Option(
        "--dest-sse-c-key",
        help="A file holding a customer key (32 bytes, raw or base64) to encrypt the replica's copies with "
        "(SSE-C). Never logged or stored.",
    ),
]
ExpectedDestOwner = Annotated[
    str | None,
    typer.Option("--expected-dest-owner", help="The replica bucket's account ID (ExpectedBucketOwner on each call)."),
]


@group
@dataclass(frozen=True, slots=True)
class SideOptions:
    """How to reach the source and the replica: the options copy, verify and run-shards share."""

    source_profile: SourceProfile = None
    dest_profile: DestProfile = None
    source_region: SourceRegion = None
    dest_region: DestRegion = None
    endpoint_url: Endpoint = None
    source_endpoint_url: SourceEndpoint = None
    dest_endpoint_url: DestEndpoint = None
    http: Http = "lean"
    read_timeout: ReadTimeout = 60.0
    expected_source_owner: ExpectedSourceOwner = None
    expected_dest_owner: ExpectedDestOwner = None
    request_payer: RequestPayer = None
    source_sse_c_key: SourceSseCKey = None
    dest_sse_c_key: DestSseCKey = None

    def build(self, source: str, dest: str) -> tuple[Side, Side]:
        """The two sides, checked (each mistake is one UserError)."""
        if self.http not in ("lean", "botocore"):
            raise UserError(f"--http must be 'lean' or 'botocore', not {self.http!r}")
        if self.read_timeout <= 0:
            raise UserError("--read-timeout must be positive")
        lean = self.http == "lean"
        src_owner = check_account("--expected-source-owner", self.expected_source_owner)
        dst_owner = check_account("--expected-dest-owner", self.expected_dest_owner)
        if self.request_payer not in (None, "requester"):
            raise UserError(f"--request-payer takes 'requester' (S3's only value), not {self.request_payer!r}")
        payer = self.request_payer == "requester"  # both sides: a copy sent to the replica reads the source
        src_ep = endpoint(self.source_endpoint_url, self.endpoint_url)
        dst_ep = endpoint(self.dest_endpoint_url, self.endpoint_url)
        return (
            Side(
                parse_s3_url(source),
                self.source_profile,
                self.source_region,
                src_ep,
                lean,
                self.read_timeout,
                src_owner,
                payer,
                self.source_sse_c_key,
            ),
            Side(
                parse_s3_url(dest),
                self.dest_profile,
                self.dest_region,
                dst_ep,
                lean,
                self.read_timeout,
                dst_owner,
                payer,
                self.dest_sse_c_key,
            ),
        )

    @property
    def dest_endpoint(self) -> str | None:
        """Where the replica's account is reached (a multi-shard job keeps its state there)."""
        return self.dest_endpoint_url or self.endpoint_url


DEFAULT_SIDES = SideOptions()  # a command's `sides` parameter defaults to it; @options replaces it by the options


LeaseSeconds = Annotated[
    float, typer.Option(help="A shard's lease lapses when not renewed this long (a dead worker's is taken over).")
]
CheckpointSeconds = Annotated[
    float, typer.Option(help="Upload each running shard's file to the state location this often.")
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")]
MaxRps = Annotated[float | None, typer.Option(help="At most this many requests per second.")]
ProgressInterval = Annotated[float, typer.Option(help="Seconds between progress lines when not on a terminal.")]
OutageTimeout = Annotated[
    float,
    typer.Option(
        help="Seconds the endpoint (or the state location) may stay unreachable (the run pauses meanwhile) "
        "before the run stops like Ctrl-C, exit 2, to be resumed."
    ),
]


def endpoint(side_value: str | None, shared: str | None) -> str | None:
    """A side's endpoint: its own option, the shared one, or the AWS CLI's environment variables."""
    return check_endpoint(side_value or shared or endpoint_from_env())


def versions_mode(value: str) -> Literal["all", "latest"]:
    if value == "all":
        return "all"
    if value == "latest":
        return "latest"
    raise UserError(f"--versions must be 'all' or 'latest', not {value!r}")


def shard_count(value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit():
        raise UserError(f"--shards must be 'auto' or a number, not {value!r}")
    return int(value)


def default_manifest(src: str, dst: str) -> str:
    """./backfill-<src>-to-<dst>.db, from the two URLs."""

    def name(url: str) -> str:
        u = parse_s3_url(url)
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{u.bucket}_{u.prefix}".rstrip("_/"))

    return f"backfill-{name(src)}-to-{name(dst)}.db"
