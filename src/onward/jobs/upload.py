"""``onward.copy(FILE, "tus+https://host/files/")``: a resumable upload through the same engine.

The source is a ``LocalSource``; the sink an ``UploadSink`` (tus 1.0.0 or the IETF
draft, by the URL's scheme); the journal an ``UploadJournal`` in the user's state
directory, keyed by the file's path and the URL, so that ``onward status`` lists it
and the same command resumes it. This module resolves those, decides whether the
upload an earlier run made may be continued (only for the very same file: same
identity and size), and runs the ``Transfer``. docs/UPLOAD.md has the rules.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from ..core import upload as proto
from ..core.http import looks_like_url, redact_url
from ..core.identity import matches
from ..core.journal import DecodeError, Upload, decode
from ..endpoints.local import LocalSource
from ..endpoints.tus import UploadSink
from ..endpoints.uploadjournal import UploadJournal
from ..engine import Transfer
from ..errors import UsageError
from ..events import CopyResult, Done, Event, Listener, Notice, Retry, dispatch
from ..options import Options

__all__ = ["state_directory", "upload"]


def state_directory() -> str:
    """Where unfinished uploads keep their journals (``$XDG_STATE_HOME/onward/uploads``)."""
    return proto.state_dir(os.environ, os.path.expanduser("~"))


def target_of(url: str) -> proto.Target:
    try:
        return proto.parse_target(url)
    except ValueError as exc:
        try:
            shown = redact_url(url)
        except ValueError:
            shown = url.partition("://")[0] + "://..."
        raise UsageError(f"{shown}: {exc}") from None


def upload(src: str, url: str, opts: Options, listeners: Sequence[Listener] = ()) -> CopyResult:
    target = target_of(url)
    if looks_like_url(src):
        raise UsageError(f"{target.name}: an upload sends a local file, not {redact_url(src)}")
    if opts.checksum is not None:
        raise UsageError(
            f"{target.name}: --expect-digest checks a copy that can be read back; an upload's bytes are "
            "checked by the protocol (docs/UPLOAD.md)"
        )

    def emit(event: Event) -> None:
        if isinstance(event, Done):  # the result names where the upload is
            event = Done(event.result._replace(location=sink.upload_url))
        for listener in listeners:
            dispatch(listener, event)

    source = LocalSource.open(src)
    try:
        sink = UploadSink.open(
            target,
            read_source=source.read_into,
            chunk_size=opts.chunk_size,
            metadata={"filename": os.path.basename(source.name)},
            headers=opts.headers,
            timeout=opts.timeout,
            retries=opts.retries,
            on_retry=lambda attempt, delay, message: emit(Retry(target.name, attempt, delay, message)),
        )
    except BaseException:
        source.close()
        raise
    sink.on_notice = lambda message: emit(Notice(target.name, message))
    try:
        journal = UploadJournal.open(state_directory(), proto.state_key(source.name, target.name), sink)
    except BaseException:
        source.close()
        sink.close()
        raise
    try:
        if not opts.restart:
            continue_earlier(journal, sink, source, target)
    except BaseException:
        source.close()
        sink.close()
        journal.close()
        raise
    return Transfer(source, sink, journal, opts, [emit]).run()._replace(location=sink.upload_url)


def recorded_upload(journal: UploadJournal) -> Upload | None:
    """The upload the journal of an earlier run names; None without one, or when the journal
    cannot be read (the engine reports that)."""
    raw = journal.read()
    with contextlib.suppress(DecodeError):
        return None if raw is None else decode(raw).upload
    return None


def continue_earlier(
    journal: UploadJournal, sink: UploadSink, source: LocalSource, target: proto.Target
) -> None:
    """Hand the sink the upload an earlier run made, if it was made for this very file."""
    binding = recorded_upload(journal)
    if binding is None:
        return
    current = source.identity()
    if binding.protocol != target.protocol:
        return
    if not matches(binding.identity, current) or binding.size != current.size:
        if sink.on_notice is not None:
            sink.on_notice(
                f"{source.name} changed since its upload to {binding.url} began: "
                "it goes to a new upload (the old one is never written to again)"
            )
        return
    url = proto.restore_secrets(binding.url, target.url)
    if url is None:
        if sink.on_notice is not None:
            sink.on_notice(
                f"the upload at {binding.url} needs a secret this URL does not give: starting a new one"
            )
        return
    sink.adopt(binding, url)
