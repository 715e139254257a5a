"""The Python API: ``onward.copy(src, dst, **options)``.

It resolves where the copy goes (as ``cp`` does: into an existing directory
under the source's name), refuses what must not be copied, wires the local
endpoints to the engine and returns a ``CopyResult``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..checksum import final_check
from ..core.http import looks_like_url, parse_checksum, redact_url
from ..endpoints.local import LocalSink, LocalSource
from ..endpoints.localjournal import LocalJournal
from ..endpoints.metadata import keeper_for
from ..engine import Transfer
from ..errors import DestinationError, SourceError, UsageError
from ..events import CopyResult, Listener
from ..options import Options

__all__ = ["copy", "resolve_destination"]

StrPath = str | os.PathLike[str]


def resolve_destination(src: str, dst: str) -> str:
    """The file path a copy of ``src`` lands at when asked to go to ``dst``."""
    if os.path.isdir(dst):
        return os.path.join(dst, os.path.basename(src.rstrip("/")))
    if dst.endswith("/"):
        why = (
            "is not a directory"
            if os.path.exists(dst.rstrip("/"))
            else "destination directory does not exist"
        )
        raise DestinationError(f"{dst}: {why}", dst)
    return dst


def copy(src: StrPath, dst: StrPath, *, listeners: Sequence[Listener] = (), **options: Any) -> CopyResult:
    """Copy the file ``src`` (a path, or an http:// or https:// URL to download) to ``dst``
    (a file path, an existing directory, or a tus+http(s):// or ietf+http(s):// URL to
    upload to), resuming
    any unfinished copy to the same place. Options are the fields of ``Options``;
    ``listeners`` are ``Subscriber`` objects or callables that receive every event.
    Raises an ``OnwardError`` subclass on failure; ``Interrupted`` on Ctrl-C.
    """
    opts = Options.build(**options)
    src_path, dst_path = os.fspath(src), os.fspath(dst)
    if not src_path:
        raise SourceError("source path is empty")
    if not dst_path:
        raise DestinationError("destination path is empty")
    if dst_path[:5].lower() == "s3://" or src_path[:5].lower() == "s3://":
        from . import s3copy  # botocore only for s3:// URLs

        if dst_path[:5].lower() == "s3://":
            if looks_like_url(src_path) or src_path[:5].lower() == "s3://":
                raise UsageError(f"{dst_path}: an S3 upload sends a local file, not {redact_url(src_path)}")
            return s3copy.upload(src_path, dst_path, opts, listeners)
        return s3copy.download(src_path, dst_path, opts, listeners)
    if looks_like_url(dst_path):
        from ..core.upload import is_upload_url  # here: local copies need not import it

        if is_upload_url(dst_path):  # tus+http(s):// or ietf+http(s)://: a resumable upload
            from .upload import upload

            return upload(src_path, dst_path, opts, listeners)
        raise UsageError(
            f"{redact_url(dst_path) if dst_path.lower().startswith('http') else dst_path}: onward uploads "
            "to tus+http(s):// (tus 1.0.0) or ietf+http(s):// (the IETF draft) URLs, not to other URLs"
        )
    if looks_like_url(src_path):  # http(s)://: a download (other schemes are refused there)
        from .download import download

        return download(src_path, dst_path, opts, listeners)
    target = os.path.abspath(resolve_destination(src_path, dst_path))
    source = LocalSource.open(src_path)
    try:
        refuse_unsafe_target(source, target)
        sink = LocalSink.open(target)
        sink.extra = keeper_for(opts.preserve, listeners).bind(source)
    except BaseException:
        source.close()
        raise
    check = final_check(lambda: [parse_checksum(opts.checksum)] if opts.checksum else [], target)
    return Transfer(source, sink, LocalJournal(target), opts, listeners, final_check=check).run()


def refuse_unsafe_target(source: LocalSource, target: str) -> None:
    try:
        st = os.stat(target)
    except OSError:
        return
    if os.path.isdir(target):
        raise DestinationError(f"{target}: is a directory; cannot replace it with a file", target)
    if (st.st_dev, st.st_ino) == (source.stat.st_dev, source.stat.st_ino):
        raise DestinationError(f"{source.name} and {target} are the same file", target)
