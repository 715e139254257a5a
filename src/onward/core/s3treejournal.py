"""The S3 tree journal codec: which files of ``onward copy -r`` to or from a store are done.

It is one more record stream in the journal format of ``core/journal.py``: the tree header
of ``core/treejournal.py`` (TREE, kind 4: the two roots), then one S3DONE record (kind 12)
per finished file::

    S3DONE (12)  UTF-8 JSON: [path, size, mtime_ns, ctime_ns, device, inode, etag]

It says: the local file at ``path`` (relative to the local root, ``/``-separated) had that
stamp when its copy finished, and the object then had that ETag. A re-run skips a file
whose stamp and whose listed object (size and ETag) are both unchanged, without reading it.
A later record for a path replaces an earlier one; a damaged record ends the reading.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from .journal import KIND_TREE, DecodeError, frame, frames, preamble
from .treejournal import Stamp

__all__ = ["KIND_S3_DONE", "Done", "encode_s3_done", "encode_s3_tree_start", "read_s3_done"]

KIND_S3_DONE = 12  # after the S3 upload kinds 10-11 of core/journal.py


class Done(NamedTuple):
    """A finished file: the local file's stamp and the object's ETag, both as they were then."""

    stamp: Stamp
    etag: str


def encode_s3_done(path: str, done: Done) -> bytes:
    fields = [path, *done.stamp, done.etag]
    return frame(KIND_S3_DONE, json.dumps(fields).encode("utf-8", "surrogateescape"))


def encode_s3_tree_start(header: bytes) -> bytes:
    """A new journal: the preamble and the TREE record whose payload is ``header``."""
    return preamble() + frame(KIND_TREE, header)


def read_s3_done(data: bytes, header: bytes) -> tuple[dict[str, Done], int] | None:
    """The finished files of the journal ``data`` and the length of its intact records, or None
    when it is not a journal of the tree ``header`` (the TREE record's payload) names: a journal
    of other roots is never trusted."""
    try:
        records = frames(data)
    except DecodeError:
        return None
    if not records or records[0][:2] != (KIND_TREE, header):
        return None
    done: dict[str, Done] = {}
    valid = records[0][2]
    for kind, payload, end in records[1:]:
        try:
            path, size, mtime_ns, ctime_ns, dev, ino, etag = json.loads(payload)
            if kind != KIND_S3_DONE or not isinstance(path, str) or not isinstance(etag, str):
                break
            done[path] = Done(Stamp(int(size), int(mtime_ns), int(ctime_ns), int(dev), int(ino)), etag)
        except (ValueError, TypeError, UnicodeDecodeError):
            break
        valid = end
    return done, valid
