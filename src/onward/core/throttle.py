"""``--bwlimit``: how long to wait so that bytes moved stay within a rate, as pure arithmetic.

A token bucket: credit grows at ``rate`` bytes a second up to ``burst`` bytes, every byte
moved spends one, and credit spent below zero is waited off. The engine waits between
chunks, never between a chunk's sync and its journal record, so a limit slows a copy
without changing the order that makes it durable.
"""

from __future__ import annotations

__all__ = ["Throttle", "paced"]


class Throttle:
    """At most ``rate`` bytes a second over time, in bursts of at most ``burst`` bytes. One
    throttle may pace several copies (a tree's files) so that their sum keeps the rate."""

    __slots__ = ("burst", "credit", "rate", "when")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate, self.burst = rate, burst
        self.credit, self.when = 0.0, now  # no credit at the start: the first burst waits too

    def delay(self, moved: int, now: float) -> float:
        """Seconds to wait after moving ``moved`` more bytes at time ``now`` (0 when none)."""
        self.credit = min(self.burst, self.credit + (now - self.when) * self.rate) - moved
        self.when = now
        return -self.credit / self.rate if self.credit < 0 else 0.0


def paced(rate: int, chunk_size: int, now: float) -> Throttle:
    """The throttle of a copy in ``chunk_size`` chunks: bursts of one chunk, or of a tenth of a
    second at the rate when that is more (a smaller burst would make every chunk wait)."""
    return Throttle(rate, max(chunk_size, rate / 10), now)
