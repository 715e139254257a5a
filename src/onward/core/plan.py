"""A transfer as a plan of fixed-size chunks, and what a set of committed chunks means."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

__all__ = ["ChunkRecord", "Committed", "Plan", "without"]


class ChunkRecord(NamedTuple):
    """One committed chunk: its index, its length and the digest of its bytes."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, which nothing calls
    length: int
    digest: bytes


# index -> record: bitmap semantics, so chunks may complete in any order.
Committed = Mapping[int, ChunkRecord]


class Plan:
    """``total_size`` bytes in chunks of ``chunk_size``; the last one may be shorter."""

    __slots__ = ("chunk_size", "total_size")

    def __init__(self, total_size: int, chunk_size: int) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        if total_size < 0:
            raise ValueError("total_size must not be negative")
        self.total_size, self.chunk_size = total_size, chunk_size

    @property
    def chunk_count(self) -> int:
        return -(-self.total_size // self.chunk_size)

    def span(self, index: int) -> tuple[int, int]:
        """(offset, length) of chunk ``index``."""
        if not 0 <= index < self.chunk_count:
            raise IndexError(index)
        offset = index * self.chunk_size
        return offset, min(self.chunk_size, self.total_size - offset)

    def fits(self, record: ChunkRecord) -> bool:
        """Whether ``record`` describes a chunk of this plan (index in range, same length)."""
        return 0 <= record.index < self.chunk_count and self.span(record.index)[1] == record.length

    def remaining(self, committed: Committed) -> list[int]:
        return [i for i in range(self.chunk_count) if i not in committed]

    def committed_bytes(self, committed: Committed) -> int:
        return sum(r.length for r in committed.values())

    def is_complete(self, committed: Committed) -> bool:
        return all(i in committed for i in range(self.chunk_count))

    def rebase(self, committed: Committed) -> dict[int, ChunkRecord]:
        """The committed chunks that still fit this plan (after the source's size changed)."""
        return {i: r for i, r in committed.items() if self.fits(r)}

    def beyond(self, committed: Committed, present: int) -> list[int]:
        """Committed chunks that end past ``present`` bytes: a partial cut short behind our back."""
        return sorted(i for i, r in committed.items() if i * self.chunk_size + r.length > present)

    def unclaimed(self, committed: Committed, present: int) -> list[int]:
        """Chunks the partial holds in full (its first ``present`` bytes) that are not committed:
        written by a run that stopped before the checkpoint that would have claimed them."""
        return [i for i in self.remaining(committed) if sum(self.span(i)) <= present]

    @staticmethod
    def last(committed: Committed, count: int) -> list[int]:
        """The ``count`` highest committed indexes: the ones a crash most likely touched."""
        return sorted(committed)[-count:] if count > 0 else []


def without(committed: Committed, drop: Iterable[int]) -> dict[int, ChunkRecord]:
    gone = set(drop)
    return {i: r for i, r in committed.items() if i not in gone}
