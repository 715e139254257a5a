"""The journal codec: how a transfer's progress is written as bytes and read back.

The format (version 1, documented in docs/JOURNAL.md) is a preamble followed by
self-checking records::

    preamble := MAGIC (8 bytes) · version (u16 LE) · reserved (u16 LE, 0)
    record   := length (u32 LE) · kind (u8) · payload (length bytes) · crc32 (u32 LE of kind+payload)

The first record is the HEADER (UTF-8 JSON); then CHUNK records, one per
committed chunk (index u64, length u32, 16-byte digest), a later record for an
index replacing an earlier one; a PROMOTE record (device u64, inode u64) is
written just before the partial is renamed onto the destination, so a crash
after that rename is recognised by the next run. Around every write to the
partial an IN-FLIGHT record (before) and a SEAL record (after: the partial's
ctime, size, inode, mount and boot) are appended without a sync: they let a
resume prove the partial untouched since (``core.trust``).

Decoding stops at the first record that is cut short, fails its checksum or
does not fit the plan: everything from there on is a damaged tail, reported
and never trusted. A bad preamble or header is not a tail: it raises.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any, NamedTuple

from .identity import Identity
from .plan import ChunkRecord, Plan

__all__ = [
    "DIGEST_NAME",
    "FORMAT_VERSION",
    "MAGIC",
    "DecodeError",
    "Decoded",
    "Garbled",
    "Header",
    "Promote",
    "Seal",
    "Upload",
    "decode",
    "encode_chunks",
    "encode_in_flight",
    "encode_promote",
    "encode_seal",
    "encode_start",
    "encode_upload",
    "frame",
    "frames",
    "preamble",
]

MAGIC = b"\x89ONWARD\n"
FORMAT_VERSION = 1
DIGEST_NAME = "xxh3-128"
DIGEST_SIZE = 16

KIND_HEADER = 1
KIND_CHUNK = 2
KIND_PROMOTE = 3
KIND_TREE = 4  # kinds 4-6 belong to tree journals: core/treejournal.py
KIND_UPLOAD = 7  # the remote upload a journal's chunks are sent to (docs/UPLOAD.md)
KIND_IN_FLIGHT = 8  # a write to the partial is about to start (unsynced)
KIND_SEAL = 9  # what the partial looked like right after onward's last write to it (unsynced)
KIND_S3_UPLOAD = 10  # kinds 10-11: an S3 multipart upload and its parts, read by core/s3.py (docs/S3.md)
KIND_S3_PART = 11
# kind 12 (S3DONE) belongs to S3 tree journals: core/s3treejournal.py (docs/S3.md)

_PREAMBLE = struct.Struct("<8sHH")
_FRAME = struct.Struct("<IB")
_CRC = struct.Struct("<I")
_CHUNK = struct.Struct(f"<QI{DIGEST_SIZE}s")
_PROMOTE = struct.Struct("<QQ")
_IN_FLIGHT = struct.Struct("<Q")
_SEAL = struct.Struct("<qQQQ16s")
MAX_HEADER = 1 << 20


class DecodeError(Exception):
    """The journal cannot be used at all: not ours, a newer version, or a broken header."""


class Garbled(DecodeError):
    """The journal's preamble or header is damaged (not a newer or another kind of journal):
    nothing in it can be trusted, but nothing in it needs a human either (set it aside)."""


class Header(NamedTuple):
    source: str
    destination: str
    identity: Identity
    chunk_size: int
    total_size: int
    created: float
    digest: str = DIGEST_NAME

    @property
    def plan(self) -> Plan:
        return Plan(self.total_size, self.chunk_size)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "identity": self.identity.to_json(),
            "chunk_size": self.chunk_size,
            "total_size": self.total_size,
            "digest": self.digest,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: Any) -> Header:
        if not isinstance(data, dict):
            raise ValueError("header is not an object")
        ints = ("chunk_size", "total_size")
        if not all(isinstance(data.get(k), int) for k in ints):
            raise ValueError("header sizes are missing or not integers")
        if not isinstance(data.get("source"), str) or not isinstance(data.get("destination"), str):
            raise ValueError("header paths are missing")
        if data.get("digest") != DIGEST_NAME:
            raise ValueError(f"unknown digest {data.get('digest')!r}")
        header = cls(
            source=data["source"],
            destination=data["destination"],
            identity=Identity.from_json(data.get("identity")),
            chunk_size=data["chunk_size"],
            total_size=data["total_size"],
            created=float(data.get("created", 0.0)),
        )
        header.plan  # noqa: B018 - validates the sizes
        return header


class Promote(NamedTuple):
    device: int
    inode: int


class Seal(NamedTuple):
    """The partial as onward left it after its last write: what a resume compares it with.

    ``ctime_ns`` cannot be set from user space and moves on every change of the file's data
    or size; ``mount`` (the kernel's mount id) and ``boot`` (the boot id) tell a seal made
    before a remount or a restart, after which the device may have lost acknowledged writes.
    """

    ctime_ns: int
    size: int
    inode: int
    mount: int  # 0: unknown
    boot: bytes  # 16 bytes; all zero: unknown


class Upload(NamedTuple):
    """The remote upload (tus or IETF draft) a journal's chunks go to, bound to the identity
    and size of the file it was created for: any other file never resumes into it."""

    protocol: str
    url: str  # without credentials; secret-looking query values REDACTED
    identity: Identity
    size: int
    created: float

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "url": self.url,
            "identity": self.identity.to_json(),
            "size": self.size,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: Any) -> Upload:
        if not isinstance(data, dict):
            raise ValueError("upload record is not an object")
        protocol, url, size = data.get("protocol"), data.get("url"), data.get("size")
        if not isinstance(protocol, str) or not isinstance(url, str) or not isinstance(size, int):
            raise ValueError("upload record has missing or mistyped fields")
        return cls(
            protocol, url, Identity.from_json(data.get("identity")), size, float(data.get("created", 0))
        )


class Decoded(NamedTuple):
    header: Header
    chunks: dict[int, ChunkRecord]
    promote: Promote | None
    upload: Upload | None  # the last UPLOAD record (remote destinations only)
    valid_length: int  # bytes of the file that decoded cleanly
    damaged_tail: int  # bytes after that, ignored
    seal: Seal | None = None  # the last SEAL record
    in_flight: int | None = None  # the chunk of an IN-FLIGHT record after the last SEAL


def frame(kind: int, payload: bytes) -> bytes:
    """One self-checking record: length, kind, payload, CRC-32 of kind and payload."""
    body = bytes([kind]) + payload
    return _FRAME.pack(len(payload), kind) + payload + _CRC.pack(zlib.crc32(body))


def preamble() -> bytes:
    """The bytes every journal (a file's or a tree's) starts with."""
    return _PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0)


def encode_start(header: Header) -> bytes:
    """Preamble and header: the bytes a new journal starts with."""
    payload = json.dumps(header.to_json(), sort_keys=True).encode("utf-8", "surrogateescape")
    return preamble() + frame(KIND_HEADER, payload)


def encode_chunks(records: list[ChunkRecord]) -> bytes:
    return b"".join(frame(KIND_CHUNK, _CHUNK.pack(r.index, r.length, r.digest)) for r in records)


def encode_promote(promote: Promote) -> bytes:
    return frame(KIND_PROMOTE, _PROMOTE.pack(promote.device, promote.inode))


def encode_in_flight(index: int) -> bytes:
    return frame(KIND_IN_FLIGHT, _IN_FLIGHT.pack(index))


def encode_seal(seal: Seal) -> bytes:
    return frame(KIND_SEAL, _SEAL.pack(*seal))


def encode_upload(upload: Upload) -> bytes:
    payload = json.dumps(upload.to_json(), sort_keys=True).encode("utf-8", "surrogateescape")
    return frame(KIND_UPLOAD, payload)


def _frames(data: bytes, pos: int) -> tuple[list[tuple[int, bytes, int]], int]:
    """Split ``data`` from ``pos`` into (kind, payload, end) frames; stop at the first bad one."""
    found = []
    while pos + _FRAME.size <= len(data):
        length, kind = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + length + _CRC.size
        if end > len(data):
            break
        body = data[pos + _FRAME.size - 1 : end - _CRC.size]
        (crc,) = _CRC.unpack_from(data, end - _CRC.size)
        if zlib.crc32(body) != crc:
            break
        found.append((kind, body[1:], end))
        pos = end
    return found, pos


def frames(data: bytes) -> list[tuple[int, bytes, int]]:
    """Check the preamble, then every intact (kind, payload, end) record up to the first bad one.
    Raises ``DecodeError`` when ``data`` is not a journal this version can read."""
    if len(data) < _PREAMBLE.size:
        raise Garbled("too short to be an onward journal")
    magic, version, _ = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise Garbled("not an onward journal")
    if version > FORMAT_VERSION:
        raise DecodeError(f"written by a newer onward (format {version}, this one reads {FORMAT_VERSION})")
    if version < 1:
        raise Garbled(f"unknown format version {version}")
    return _frames(data, _PREAMBLE.size)[0]


def decode(data: bytes) -> Decoded:
    """Read a whole journal; raises ``DecodeError`` when it cannot be used at all."""
    records = frames(data)
    if records and records[0][0] == KIND_TREE:
        raise DecodeError("this is the journal of a directory tree (onward copy -r), not of one file")
    if not records or records[0][0] != KIND_HEADER:
        raise Garbled("header record is missing or damaged")
    try:
        raw = records[0][1]
        if len(raw) > MAX_HEADER:
            raise ValueError("header too large")
        header = Header.from_json(json.loads(raw.decode("utf-8", "surrogateescape")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Garbled(f"header is unreadable ({exc})") from None
    chunks: dict[int, ChunkRecord] = {}
    promote: Promote | None = None
    upload: Upload | None = None
    seal: Seal | None = None
    in_flight: int | None = None
    valid = records[0][2]
    plan = header.plan
    for kind, payload, end in records[1:]:
        if kind == KIND_CHUNK and len(payload) == _CHUNK.size:
            record = ChunkRecord(*_CHUNK.unpack(payload))
            if not plan.fits(record):
                break
            chunks[record.index] = record
        elif kind == KIND_PROMOTE and len(payload) == _PROMOTE.size:
            promote = Promote(*_PROMOTE.unpack(payload))
        elif kind == KIND_SEAL and len(payload) == _SEAL.size:
            seal, in_flight = Seal(*_SEAL.unpack(payload)), None
        elif kind == KIND_IN_FLIGHT and len(payload) == _IN_FLIGHT.size:
            (in_flight,) = _IN_FLIGHT.unpack(payload)
        elif kind == KIND_UPLOAD and len(payload) <= MAX_HEADER:
            try:
                upload = Upload.from_json(json.loads(payload.decode("utf-8", "surrogateescape")))
            except (ValueError, UnicodeDecodeError):
                break
        elif kind not in (KIND_S3_UPLOAD, KIND_S3_PART):
            break
        valid = end
    return Decoded(header, chunks, promote, upload, valid, len(data) - valid, seal, in_flight)
