"""The tree journal codec: which files of a directory-tree copy are done.

A tree journal is one more record stream in the journal format of
``core/journal.py`` (same preamble, same self-checking frames, same version 1;
documented in docs/JOURNAL.md, "Tree journals"). It has record kinds of its own,
so a file journal and a tree journal can never be mistaken for each other::

    TREE   (4)  UTF-8 JSON: source and destination roots, whether symlinks are followed
    DONE   (5)  size u64 · mtime_ns i64 · ctime_ns i64 · device u64 · inode u64 · path (bytes)
    COUNTS (6)  files u64 · bytes u64 · done files u64 · done bytes u64: the source tree as a run
                listed it, and how much of it was already done then (for ``onward status``)

A DONE record says: the file at ``path`` (relative to the roots, ``/``-separated,
the raw bytes of its name) was copied from a source with that stamp, and its
data, its rename and its directory entry are durable. A later record for the
same path replaces an earlier one. A file being copied has no record here: its
progress is its own file journal beside it (``NAME.onward-journal``).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, NamedTuple

from .journal import KIND_HEADER, KIND_TREE, DecodeError, Garbled, frame, frames, preamble

__all__ = [
    "KIND_COUNTS",
    "KIND_DONE",
    "KIND_TREE",
    "Counts",
    "Stamp",
    "TreeDecoded",
    "TreeHeader",
    "decode_tree",
    "encode_counts",
    "encode_done",
    "encode_tree_start",
    "is_tree_journal",
]

KIND_DONE = 5
KIND_COUNTS = 6

_DONE = struct.Struct("<QqqQQ")
_COUNTS = struct.Struct("<QQQQ")
MAX_HEADER = 1 << 20


class Stamp(NamedTuple):
    """What identifies a local source file's content: the same attributes as its ``Identity``
    (device, inode, size, mtime and ctime in nanoseconds); any difference means it may have changed."""

    size: int
    mtime_ns: int
    ctime_ns: int
    dev: int
    ino: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_dev, st.st_ino)


class TreeHeader(NamedTuple):
    source: str  # absolute path of the source root
    destination: str  # absolute path of the destination root
    follow_symlinks: bool
    created: float

    def to_json(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_json(cls, data: Any) -> TreeHeader:
        if not isinstance(data, dict):
            raise ValueError("header is not an object")
        if not isinstance(data.get("source"), str) or not isinstance(data.get("destination"), str):
            raise ValueError("header paths are missing")
        if not isinstance(data.get("follow_symlinks"), bool):
            raise ValueError("header lacks follow_symlinks")
        return cls(
            data["source"], data["destination"], data["follow_symlinks"], float(data.get("created", 0))
        )


class Counts(NamedTuple):
    files: int
    bytes: int
    done_files: int  # already done when the run that wrote this began
    done_bytes: int


class TreeDecoded(NamedTuple):
    header: TreeHeader
    done: dict[str, Stamp]
    counts: Counts | None  # the last COUNTS record
    done_since: tuple[int, int]  # files and bytes of the DONE records after it
    valid_length: int
    damaged_tail: int

    @property
    def progress(self) -> tuple[int, int, int, int] | None:
        """(files done, files, bytes done, bytes) as far as the journal knows; None without COUNTS."""
        if self.counts is None:
            return None
        files, size, done_files, done_bytes = self.counts
        return done_files + self.done_since[0], files, done_bytes + self.done_since[1], size


def encode_tree_start(header: TreeHeader) -> bytes:
    payload = json.dumps(header.to_json(), sort_keys=True).encode("utf-8", "surrogateescape")
    return preamble() + frame(KIND_TREE, payload)


def encode_done(path: str, stamp: Stamp) -> bytes:
    """``path`` is relative, ``/``-separated; names that are not UTF-8 keep their exact bytes."""
    raw = os.fsencode(path)
    if not raw or raw.startswith(b"/"):
        raise ValueError(f"not a relative path: {path!r}")
    fields = (stamp.size, stamp.mtime_ns, stamp.ctime_ns, stamp.dev, stamp.ino)
    return frame(KIND_DONE, _DONE.pack(*fields) + raw)


def encode_counts(counts: Counts) -> bytes:
    return frame(KIND_COUNTS, _COUNTS.pack(*counts))


def is_tree_journal(data: bytes) -> bool:
    """Whether ``data`` is a journal whose first record is a tree header."""
    try:
        records = frames(data)
    except DecodeError:
        return False
    return bool(records) and records[0][0] == KIND_TREE


def _header(first: tuple[int, bytes, int] | None) -> TreeHeader:
    """The tree header the ``first`` record holds; ``Garbled`` when it is missing or unreadable."""
    kind, raw = (first[0], first[1]) if first is not None else (None, b"")
    if kind == KIND_HEADER:
        raise DecodeError("this is the journal of one file, not of a directory tree")
    if kind != KIND_TREE:
        raise Garbled("tree header record is missing or damaged")
    if len(raw) > MAX_HEADER:
        raise Garbled("tree header is unreadable (header too large)")
    try:
        return TreeHeader.from_json(json.loads(raw.decode("utf-8", "surrogateescape")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Garbled(f"tree header is unreadable ({exc})") from None


def decode_tree(data: bytes) -> TreeDecoded:
    """Read a whole tree journal; raises ``DecodeError`` when it cannot be used at all.
    Stops at the first record that is torn, fails its CRC, or is of an unknown kind or size."""
    records = frames(data)
    header = _header(records[0] if records else None)
    done: dict[str, Stamp] = {}
    counts: Counts | None = None
    files_since = bytes_since = 0
    valid = records[0][2]
    for kind, payload, end in records[1:]:
        if kind == KIND_DONE and len(payload) > _DONE.size:
            size, mtime_ns, ctime_ns, dev, ino = _DONE.unpack_from(payload)
            raw_path = payload[_DONE.size :]
            if raw_path.startswith(b"/") or b"\0" in raw_path:
                break
            done[os.fsdecode(raw_path)] = Stamp(size, mtime_ns, ctime_ns, dev, ino)
            files_since, bytes_since = files_since + 1, bytes_since + size
        elif kind == KIND_COUNTS and len(payload) == _COUNTS.size:
            counts = Counts(*_COUNTS.unpack(payload))
            files_since = bytes_since = 0
        else:
            break
        valid = end
    return TreeDecoded(header, done, counts, (files_since, bytes_since), valid, len(data) - valid)
