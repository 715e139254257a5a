"""When to try again after a transient error, and how long to wait first."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Backoff"]


class Backoff(NamedTuple):
    """Exponential backoff with jitter, capped; ``retries`` attempts after the first."""

    retries: int = 5
    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0

    def delay(self, attempt: int, jitter: float, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number ``attempt`` (1-based), or None to give up.

        ``jitter`` is a number in [0, 1) supplied by the caller (the core draws no
        random numbers); it spreads the wait over [half, full] of the exponential
        step so that many clients do not retry in lockstep. A server's
        ``retry_after`` is honoured when longer, still within the cap.
        """
        if attempt < 1 or attempt > self.retries:
            return None
        step = min(self.cap, self.base * self.factor ** (attempt - 1))
        wait = step * (0.5 + jitter / 2)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.cap))
        return wait
