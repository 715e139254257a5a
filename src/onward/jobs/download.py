"""``onward.copy(URL, DST)``: an HTTP(S) download through the same engine and journal as a copy.

The source is an ``HttpSource``; the sink and the journal are the local ones, so
the partial and the journal sit beside the destination as for any copy, and
``onward status`` / ``clean`` see downloads like copies (the journal records the
URL without its credentials). This module only resolves where the file goes,
says what the server allows, and wires the pieces; ``api.copy`` sends URLs here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..checksum import final_check
from ..core.http import Expected, name_from_url, parse_checksum, safe_filename
from ..endpoints.http import HttpSource
from ..endpoints.local import JOURNAL_SUFFIX, LocalSink
from ..endpoints.localjournal import LocalJournal
from ..endpoints.transport import OnRetry
from ..engine import Transfer
from ..errors import DestinationError, UsageError
from ..events import CopyResult, Event, Listener, Notice, Retry, dispatch
from ..options import Options
from .unsized import UnsizedTransfer, adopt_unsized

__all__ = ["download", "download_target"]

STREAMING = {
    "no-length": "the server does not say how large the file is (no Content-Length)",
    "no-ranges": "the server does not support byte ranges",
    "no-validator": "the server sends no ETag or Last-Modified, so a second request cannot be proven "
    "to return the same file",
}


def download_target(source: HttpSource, dst: str, opts: Options) -> tuple[str, str | None]:
    """Where the download of ``source`` lands when asked to go to ``dst``, and a notice (or None).

    A path the user names is used as given (and replaced, as ``cp`` does). Into an
    existing directory the file goes under the last segment of the URL's path, or,
    with ``content_disposition``, under the name the server suggests, which is only
    a suggestion: reduced to a plain name inside the directory, refused when it is a
    hidden (dot) file unless ``allow_hidden``, and never replacing a file already there
    (as ``curl -OJ``). A URL with no usable name needs a file path.
    """
    if not os.path.isdir(dst):
        if dst.endswith("/"):
            why = "is not a directory" if os.path.exists(dst.rstrip("/")) else "directory does not exist"
            raise DestinationError(f"{dst}: {why}", dst)
        return dst, None
    raw = source.filename if opts.content_disposition else None
    name, note = suggested_name(raw, opts.allow_hidden)
    if name is not None:
        path = os.path.join(dst, name)
        if os.path.lexists(path) and not os.path.lexists(path + JOURNAL_SUFFIX):
            raise DestinationError(
                f"{path}: already exists, and the name {name!r} came from the server (Content-Disposition); "
                "onward does not replace a file the server named: remove it, or give the destination path",
                path,
            )
        return path, note
    name = name_from_url(source.name)
    if name is None:
        raise UsageError(
            f"{source.name}: the URL names no file and the server sent no usable file name; "
            "give the destination as a file path"
        )
    return os.path.join(dst, name), note


def suggested_name(raw: str | None, allow_hidden: bool) -> tuple[str | None, str | None]:
    """The server's file name as it may be used (None: not at all), and what to tell about it."""
    if raw is None:
        return None, None
    name = safe_filename(raw)
    if name is not None and name.startswith(".") and not allow_hidden:
        return (
            None,
            f"the server's file name {raw!r} is a hidden file; named after the URL instead (--allow-hidden)",
        )
    if name == raw:
        return name, None
    return name, f"the server's file name {raw!r} " + (
        f"was reduced to {name!r}" if name else "is unusable; named after the URL instead"
    )


def open_source(url: str, opts: Options, on_retry: OnRetry) -> HttpSource:
    """The source of a download: the server asked about the file, with retries."""
    headers, timeout, connections, retries = opts.headers, opts.timeout, opts.connections, opts.retries
    return HttpSource.open(
        url, headers=headers, timeout=timeout, connections=connections, retries=retries, on_retry=on_retry
    )


def file_sink(path: str) -> tuple[str, LocalSink]:
    """The absolute path a download writes and its sink; a directory there is refused."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise DestinationError(f"{path}: is a directory; cannot replace it with a file", path)
    return path, LocalSink.open(path)


def download(url: str, dst: str, opts: Options, listeners: Sequence[Listener] = ()) -> CopyResult:
    where = [dst]  # what Retry and Notice events name, once known

    def emit(event: Event) -> None:
        for listener in listeners:
            dispatch(listener, event)

    def on_retry(attempt: int, delay: float, message: str) -> None:
        emit(Retry(where[0], attempt, delay, message))

    source = open_source(url, opts, on_retry)
    try:
        target, note = download_target(source, dst, opts)
        target, sink = file_sink(target)
    except BaseException:
        source.close()
        raise
    where[0] = target
    if note:
        emit(Notice(target, note))
    if source.streaming in STREAMING:
        emit(
            Notice(
                target,
                f"{STREAMING[source.streaming]}: downloading it from the start in one piece; "
                "an interrupted download starts over",
            )
        )
        if opts.verify == "full":
            emit(Notice(target, "--verify full needs byte ranges to read the source again: using fast"))
            opts = opts._replace(verify="fast")
    journal = LocalJournal(target)
    if not opts.restart:
        resumable = source.sized and not source.streaming
        adopted = adopt_unsized(journal, source.name, source.described(), resumable)
        if adopted:
            emit(Notice(target, adopted))
    given: list[Expected] = [parse_checksum(opts.checksum)] if opts.checksum else []
    check = final_check(lambda: [*given, *source.digests], target)
    kind = Transfer if source.sized else UnsizedTransfer
    return kind(source, sink, journal, opts, listeners, final_check=check).run()
