"""The knobs of a copy, validated once where they enter the library."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from .errors import UsageError

__all__ = ["Options"]

MiB = 1 << 20


@dataclass(frozen=True)
class Options:
    """Defaults are measured (docs/PERFORMANCE.md): a 64 MiB / 1 s checkpoint costs
    two fdatasync calls per 64 MiB, lost in the noise of a durable copy."""

    chunk_size: int = 4 * MiB
    checkpoint_bytes: int = 64 * MiB
    checkpoint_seconds: float = 1.0
    verify: Literal["fast", "full"] = "fast"
    restart: bool = False
    preserve_mode: bool = True
    preserve_times: bool = True
    retries: int = 5
    recheck_chunks: int = 4  # committed chunks re-hashed from the partial on resume

    @classmethod
    def build(cls, **given: Any) -> Options:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise UsageError(f"unknown option(s): {', '.join(unknown)}")
        opts = cls(**given)
        opts.validate()
        return opts

    def validate(self) -> None:
        if not 4096 <= self.chunk_size <= 1024 * MiB:
            raise UsageError(f"chunk size must be between 4 KiB and 1 GiB, not {self.chunk_size}")
        if self.checkpoint_bytes < 1:
            raise UsageError("checkpoint bytes must be positive")
        if not self.checkpoint_seconds > 0:
            raise UsageError("checkpoint seconds must be positive")
        if self.verify not in ("fast", "full"):
            raise UsageError(f"verify must be 'fast' or 'full', not {self.verify!r}")
        if self.retries < 0:
            raise UsageError("retries must not be negative")
        if self.recheck_chunks < 0:
            raise UsageError("recheck_chunks must not be negative")
