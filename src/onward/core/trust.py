"""When a resume may trust the committed prefix of a partial without reading it back.

A journal's CHUNK records say what onward wrote; they say nothing about what happened to
the partial after the run stopped (another program writing into it, a device that lost an
acknowledged write in a power cut, bit rot). A resume skips re-reading those chunks only
on proof that nothing changed the partial since onward's own last write to it: the last
SEAL record (appended right after every write) equals the partial as it is now, and no
write was in flight when the run stopped. Anything else is answered by reading every
committed chunk back (docs/RELIABILITY.md, "When a resume trusts the partial").
"""

from __future__ import annotations

from .journal import Seal

__all__ = ["UNKNOWN_BOOT", "distrust"]

UNKNOWN_BOOT = bytes(16)


def distrust(last: Seal | None, in_flight: int | None, now: Seal) -> str | None:
    """Why the partial ``now`` may differ from what the journal's chunks claim, or None when
    the seal ``last`` proves it unchanged since onward's last write."""
    if last is None:
        return "the journal does not record onward's last write to the partial copy"
    if in_flight is not None:
        return f"the last run was stopped while writing chunk {in_flight}"
    if last.boot == UNKNOWN_BOOT or last.boot != now.boot:
        return "the machine restarted since the last run (a device may lose acknowledged writes)"
    if last.mount == 0 or last.mount != now.mount:
        return "the partial copy's file system was mounted again since the last run"
    if last.inode != now.inode:
        return "the partial copy was replaced since the last run"
    if last.size != now.size:
        return "the partial copy changed size since the last run"
    if last.ctime_ns != now.ctime_ns:
        return "the partial copy was changed since the last run"
    return None
