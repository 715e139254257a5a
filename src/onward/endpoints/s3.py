"""S3-compatible object stores: the client, and the store's errors as ``onward.errors`` types.

botocore (the ``onward[s3]`` extra) signs the requests and resolves credentials, region and
endpoint as the AWS CLI does; it is imported by the S3 endpoint modules only (this one,
``s3upload`` and ``s3source``), and those only for ``s3://`` URLs (docs/S3.md has the
measurement). Every store error leaves them as an ``onward.errors`` type whose message names
the object and the cause, never a credential (``translate``).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator
from typing import Any, NamedTuple

import botocore.config
import botocore.exceptions
import botocore.session

from .._version import __version__
from ..core import s3 as proto
from ..errors import DestinationError, OnwardError, SourceError, TransientError, UsageError

__all__ = ["Settings", "Store", "connect", "delete_objects", "head", "list_objects", "translate"]

# botocore's errors a store call may raise (caught together by every caller).
CALL_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


class Settings(NamedTuple):
    """How to reach the store: as the AWS CLI's options and environment say (None: the default)."""

    profile: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    timeout: float = 30.0
    retries: int = 5
    connections: int = 1


class Store(NamedTuple):
    client: Any  # a botocore S3 client (thread-safe)
    endpoint: str  # the store's URL, without user information: recorded and shown


def connect(settings: Settings, name: str) -> Store:
    """A client for the store ``settings`` name: the standard credential chain (environment,
    ``~/.aws`` profiles, SSO, instance roles), ``--endpoint-url`` or ``AWS_ENDPOINT_URL(_S3)``,
    path-style addressing for such endpoints (S3-compatible stores)."""
    try:
        session = botocore.session.Session(profile=settings.profile)
        region = settings.region or session.get_config_variable("region") or "us-east-1"
        endpoint = (
            settings.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )
        config = botocore.config.Config(
            region_name=region,
            retries={"max_attempts": settings.retries + 1, "mode": "standard"},
            connect_timeout=settings.timeout,
            read_timeout=settings.timeout,
            max_pool_connections=max(10, 2 * settings.connections),
            # onward computes and checks every checksum itself: no aws-chunked trailers, which
            # some S3-compatible stores refuse (aws-cli#9214, boto3#4400).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"} if endpoint else None,
            user_agent_extra=f"onward/{__version__}",
        )
        client = session.create_client("s3", endpoint_url=endpoint, config=config)
    except botocore.exceptions.ProfileNotFound:
        raise UsageError(f"{name}: no AWS profile named {settings.profile!r} in ~/.aws/config") from None
    except ValueError as exc:  # a malformed --endpoint-url
        raise UsageError(f"{name}: bad endpoint URL: {exc}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise UsageError(f"{name}: cannot set up the S3 client: {type(exc).__name__}") from None
    shown = urllib.parse.urlsplit(client.meta.endpoint_url)
    host = shown.netloc.rpartition("@")[2]
    return Store(client, urllib.parse.urlunsplit((shown.scheme, host, shown.path, "", "")))


def error_code(exc: BaseException) -> tuple[str, int] | None:
    """The store's error code and HTTP status of a ``ClientError``, else None."""
    if isinstance(exc, botocore.exceptions.ClientError):
        response: Any = exc.response
        return str(response.get("Error", {}).get("Code", "")), int(
            response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        )
    return None


def kind_of(exc: BaseException) -> str | None:
    found = error_code(exc)
    return proto.classify(*found) if found else None


def translate(exc: BaseException, name: str, doing: str, *, source: bool) -> OnwardError:
    """The ``onward.errors`` type for a botocore error met while ``doing`` something to ``name``."""
    kind = SourceError if source else DestinationError
    if isinstance(exc, OnwardError):
        return exc
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return kind(
            f"{name}: no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or give a profile of ~/.aws/credentials with --profile or AWS_PROFILE",
            name,
        )
    if isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectionClosedError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ResponseStreamingError,
    ):
        return TransientError(
            f"{name}: cannot reach the store while {doing} ({type(exc).__name__}); re-run to resume", name
        )
    found = error_code(exc)
    if found is None:
        return kind(f"{name}: {doing} failed ({type(exc).__name__})", name)
    code, status = found
    what = proto.classify(code, status)
    bucket = name[5:].partition("/")[0]
    if what == "transient":
        return TransientError(
            f"{name}: the store is busy or failing ({code or 'HTTP'} {status}) while {doing}; re-run",
            name,
        )
    if what == "skew":
        return kind(
            f"{name}: the store refuses the request because this machine's clock is off ({code}); "
            "set the clock (NTP) and re-run",
            name,
        )
    if what == "denied":
        return kind(
            f"{name}: access denied ({code or status}) while {doing}; check the credentials, "
            "--profile and the bucket's policy",
            name,
        )
    if what == "no-bucket":
        return kind(
            f"{name}: no such bucket {bucket!r} (check the name, the region and --endpoint-url)", name
        )
    if what == "no-key":
        return kind(f"{name}: no such object", name)
    return kind(f"{name}: {doing} failed: {code or 'HTTP'} {status}", name)


def checksum_param(algorithm: str) -> str:
    return "Checksum" + proto.CHECKSUMS[algorithm][0]


# -- trees --------------------------------------------------------------------------------------


def list_objects(store: Store, bucket: str, prefix: str, name: str) -> Iterator[tuple[str, int, str]]:
    """(key, size, ETag) of every object under ``prefix``, all pages, in key order."""
    params: dict[str, str] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        try:
            page = store.client.list_objects_v2(**params)
        except CALL_ERRORS as exc:
            raise translate(exc, name, "listing the objects", source=True) from None
        for item in page.get("Contents", []):
            yield str(item["Key"]), int(item["Size"]), str(item.get("ETag", ""))
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
        params["ContinuationToken"] = str(token)


def head(store: Store, target: proto.S3Url, part: int | None = None) -> dict[str, Any] | None:
    """The object's HeadObject answer (with its stored checksum; of one part when ``part`` is
    given), or None when there is none."""
    extra: dict[str, Any] = {"PartNumber": part} if part is not None else {}
    try:
        return dict(
            store.client.head_object(Bucket=target.bucket, Key=target.key, ChecksumMode="ENABLED", **extra)
        )
    except CALL_ERRORS as exc:
        if kind_of(exc) == "no-key":
            return None
        raise translate(exc, target.name, "looking at the object", source=False) from None


def delete_objects(store: Store, bucket: str, keys: list[str], name: str) -> list[tuple[str, str]]:
    """Delete ``keys`` (DeleteObjects, 1,000 a request); (URL, cause) of each the store kept."""
    failed: list[tuple[str, str]] = []
    for start in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        try:
            answer = store.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        except CALL_ERRORS as exc:
            raise translate(exc, name, "deleting objects", source=False) from None
        for item in answer.get("Errors", []):
            url = f"s3://{bucket}/{item.get('Key', '')}"
            failed.append((url, f"{url}: not deleted: {item.get('Code', 'error')}"))
    return failed
