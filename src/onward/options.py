"""The knobs of a copy, validated once where they enter the library."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from .errors import UsageError

__all__ = ["Options"]

MiB = 1 << 20
MAX_CONNECTIONS = 16
PRESERVE_ITEMS = frozenset({"owner", "group", "xattrs", "acls"})  # what endpoints.metadata keeps
S3_CHECKSUMS = ("crc32c", "crc32", "sha256", "sha1")  # the keys of core.s3.CHECKSUMS


# Checkpoint intervals (docs/PERFORMANCE.md, "Figures the code's choices rest on"). Each
# ``fdatasync`` flushes the disk's write cache at a fixed cost per flush, so fewer checkpoints
# copy faster; what a longer interval risks is the work a resume has to redo. A resume of a
# local copy keeps what was written after the last checkpoint (``Transfer.adopt``): there only
# a power cut loses up to one interval, so it gets the longer one. A download, an upload or a
# batch of small files cannot keep it: there a kill loses it too.
CHECKPOINT_BYTES = 64 * MiB
CHECKPOINT_BYTES_KEPT = 256 * MiB  # where a resume keeps the chunks written after the checkpoint


class Options(NamedTuple):
    """The knobs of one copy (``checkpoint_bytes`` None: chosen per copy, ``checkpoint_every``)."""

    chunk_size: int = 4 * MiB
    checkpoint_bytes: int | None = None
    checkpoint_seconds: float = 1.0
    verify: Literal["none", "fast", "full"] = "fast"
    restart: bool = False
    preserve_mode: bool = True
    preserve_times: bool = True
    # owner, group, xattrs, acls (endpoints.metadata); None: owner and group for root, as cp -a
    preserve: frozenset[str] | None = None
    retries: int = 5
    recheck_chunks: int = 4  # committed chunks re-hashed from the partial on resume
    checksum: str | None = None  # "ALG:HEX" the finished copy must match (sha256, sha512, sha1, md5)
    bwlimit: int | None = None  # bytes a second at most (--bwlimit, --limit-rate)
    sparse: bool = True  # a local source's holes stay holes (--no-sparse: written as zeros)
    # Downloads only (URL sources; see docs/CLI.md):
    connections: int = 1  # parallel ranged requests
    timeout: float = 30.0  # seconds to connect, or to wait for the next bytes
    headers: Sequence[tuple[str, str]] = ()  # extra request headers
    content_disposition: bool = False  # into a directory: the server's file name, if safe
    allow_hidden: bool = False  # ... even a dot-file
    # S3 (s3:// URLs; docs/S3.md). None: as the AWS CLI's configuration and environment say.
    part_size: int | None = None  # multipart part size (None: 8 MiB, more for files over 78 GiB)
    checksum_algorithm: str = "crc32c"  # x-amz-checksum-* of every part: crc32c, crc32, sha256, sha1
    profile: str | None = None
    endpoint_url: str | None = None
    region: str | None = None

    @classmethod
    def build(cls, **given: Any) -> Options:
        unknown = sorted(set(given) - set(cls._fields))
        if unknown:
            raise UsageError(f"unknown option(s): {', '.join(unknown)}")
        opts = cls(**given)
        opts.validate()
        return opts

    def checkpoint_every(self, kept: bool) -> int:
        """Bytes between checkpoints: as given, else by whether a resume of this copy keeps the
        chunks written after its last checkpoint (``kept``)."""
        if self.checkpoint_bytes is not None:
            return self.checkpoint_bytes
        return CHECKPOINT_BYTES_KEPT if kept else CHECKPOINT_BYTES

    def validate(self) -> None:
        if not 4096 <= self.chunk_size <= 1024 * MiB:
            raise UsageError(f"chunk size must be between 4 KiB and 1 GiB, not {self.chunk_size}")
        if self.checkpoint_bytes is not None and self.checkpoint_bytes < 1:
            raise UsageError("checkpoint bytes must be positive")
        if not self.checkpoint_seconds > 0:
            raise UsageError("checkpoint seconds must be positive")
        if self.verify not in ("none", "fast", "full"):
            raise UsageError(f"verify must be 'none', 'fast' or 'full', not {self.verify!r}")
        if self.preserve is not None and not set(self.preserve) <= PRESERVE_ITEMS:
            raise UsageError(f"preserve: one or more of {', '.join(sorted(PRESERVE_ITEMS))}")
        if self.retries < 0:
            raise UsageError("retries must not be negative")
        if self.bwlimit is not None and self.bwlimit < 1:
            raise UsageError("the bandwidth limit must be at least 1 byte a second")
        if self.recheck_chunks < 0:
            raise UsageError("recheck_chunks must not be negative")
        if self.checksum is not None:
            from .core.http import parse_checksum  # the HTTP helpers only when they are needed

            try:
                parse_checksum(self.checksum)
            except ValueError as exc:
                raise UsageError(f"--expect-digest: {exc}") from None
        if not 1 <= self.connections <= MAX_CONNECTIONS:
            raise UsageError(f"connections must be between 1 and {MAX_CONNECTIONS}, not {self.connections}")
        if self.checksum_algorithm not in S3_CHECKSUMS:
            raise UsageError(
                f"--checksum-algorithm: one of {', '.join(S3_CHECKSUMS)}, not {self.checksum_algorithm!r}"
            )
        if not self.timeout > 0:
            raise UsageError("timeout must be positive")
        for item in self.headers:
            if not isinstance(item, tuple) or len(item) != 2:
                raise UsageError(f"headers must be (name, value) pairs, not {item!r}")
            from .core.http import header_problem

            problem = header_problem(*item)
            if problem is not None:
                raise UsageError(f"-H {item[0]!r}: {problem}")
