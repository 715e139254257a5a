"""Whole-file digests checked on the finished partial, before it may take the final name.

``--expect-digest ALG:HEX`` and a server's ``Repr-Digest`` / ``Digest`` header become
``Expected`` values (``onward.core.http``); ``check_digests`` reads the partial once,
feeding every hash that is asked for, and raises ``IntegrityError`` on a mismatch.
The engine calls it as the last step of verification (``Transfer(final_check=...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .endpoints.buffers import aligned_buffer
from .errors import IntegrityError

if TYPE_CHECKING:
    from .core.http import Expected

__all__ = ["FinalCheck", "check_digests", "final_check"]

BLOCK = 1 << 20

# (read_into of the finished partial, its size) -> None, or raises IntegrityError.
FinalCheck = Callable[[Callable[[int, memoryview], int], int], None]


def check_digests(
    read: Callable[[int, memoryview], int], size: int, expected: Sequence[Expected], name: str
) -> None:
    if not expected:
        return
    import hashlib  # here, not at start-up: most copies check no whole-file digest

    hashers = {e.algorithm: hashlib.new(e.algorithm) for e in expected}
    buf = aligned_buffer(BLOCK)
    offset = 0
    while offset < size:
        view = buf[: min(BLOCK, size - offset)]
        got = read(offset, view)
        if got <= 0:
            break
        for hasher in hashers.values():
            hasher.update(view[:got])
        offset += got
    for want in expected:
        have = hashers[want.algorithm].hexdigest()
        if have != want.hex:
            raise IntegrityError(
                f"{name}: {want.algorithm} of the finished copy is {have}, but {want.origin} says "
                f"{want.hex}; nothing was promoted (the partial is kept: check the expected value, "
                "or re-run with --restart to fetch it again)",
                name,
            )


def final_check(expected: Callable[[], Sequence[Expected]], name: str) -> FinalCheck:
    """A ``Transfer`` final check against whatever ``expected()`` returns at the time."""

    def run(read: Callable[[int, memoryview], int], size: int) -> None:
        check_digests(read, size, expected(), name)

    return run
