"""In-memory test doubles for the endpoint interfaces, with an operation log.

They let the engine's rules be checked without a disk: what was written when,
what was synced before which journal record, and what happens when an
operation fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from onward.core.identity import Identity
from onward.core.journal import Promote, Seal
from onward.endpoints import Attributes
from onward.errors import DurabilityError

Log = list[tuple[str, object]]


@dataclass
class MemorySource:
    data: bytes
    connections = 1
    readahead = 2
    recheck_on_change = True
    log: Log = field(default_factory=list)
    name: str = "/src"
    version: int = 1
    fail_read: Callable[[int], Exception | None] = lambda offset: None
    on_read: Callable[[MemorySource, int], None] = lambda source, offset: None

    def identity(self) -> Identity:
        return Identity("memory", len(self.data), {"version": self.version})

    def attributes(self) -> Attributes:
        return Attributes(0o640, (1, 2))

    def read_into(self, offset: int, buf: memoryview) -> int:
        self.log.append(("read", offset))
        error = self.fail_read(offset)
        if error is not None:
            raise error
        piece = self.data[offset : offset + len(buf)]
        buf[: len(piece)] = piece
        self.on_read(self, offset)
        return len(piece)

    def replace(self, data: bytes) -> None:
        self.data, self.version = data, self.version + 1

    def close(self) -> None:
        self.log.append(("close-source", None))


@dataclass
class MemorySink:
    log: Log = field(default_factory=list)
    name: str = "/dst"
    partial: bytearray | None = None
    final: bytes | None = None
    final_token: Promote | None = None
    fail_sync: bool = False
    on_write: Callable[[int], None] = lambda offset: None
    promoted_with: tuple[int | None, tuple[int, int] | None] | None = None
    can_read_back: bool = True
    changes: int = 0  # what a real partial's ctime is to a seal: moves with every change made

    def present(self) -> int | None:
        return None if self.partial is None else len(self.partial)

    def reset(self) -> None:
        self.partial = bytearray()
        self.changes += 1

    def seal(self) -> Seal | None:
        if self.partial is None:
            return None
        return Seal(self.changes, len(self.partial), 42, 1, b"\1" * 16)

    def write(self, offset: int, data: memoryview) -> None:
        assert self.partial is not None
        self.changes += 1
        self.on_write(offset)
        end = offset + len(data)
        if len(self.partial) < end:
            self.partial.extend(bytes(end - len(self.partial)))
        self.partial[offset:end] = data
        self.log.append(("write", offset))

    def read_into(self, offset: int, buf: memoryview) -> int:
        assert self.partial is not None
        piece = self.partial[offset : offset + len(buf)]
        buf[: len(piece)] = piece
        return len(piece)

    def truncate(self, size: int) -> None:
        assert self.partial is not None
        del self.partial[size:]
        self.changes += 1

    def sync(self) -> None:
        if self.fail_sync:
            raise DurabilityError("/dst.partial: fsync failed: Input/output error")
        self.log.append(("sync", None))

    def token(self) -> Promote:
        return Promote(1, 42)

    def holds(self, token: Promote) -> bool:
        return self.final_token == token

    def promote(self, mode: int | None, times_ns: tuple[int, int] | None) -> None:
        assert self.partial is not None
        self.final, self.final_token, self.partial = bytes(self.partial), self.token(), None
        self.promoted_with = (mode, times_ns)
        self.log.append(("promote", None))

    def settle(self) -> None:
        self.log.append(("settle", None))

    def close(self) -> None:
        pass


@dataclass
class MemoryJournal:
    log: Log = field(default_factory=list)
    name: str = "/dst.journal"
    data: bytes | None = None

    def read(self) -> bytes | None:
        return self.data

    def create(self, data: bytes) -> None:
        self.data = data
        self.log.append(("journal-create", len(data)))

    def append(self, data: bytes) -> None:
        assert self.data is not None
        self.data += data
        self.log.append(("journal-append", data))

    def note(self, data: bytes) -> None:
        assert self.data is not None
        self.data += data

    def set_aside(self) -> str:
        self.data = None
        self.log.append(("journal-set-aside", None))
        return self.name + ".bad"

    def remove(self) -> None:
        self.data = None
        self.log.append(("journal-remove", None))

    def close(self) -> None:
        pass
