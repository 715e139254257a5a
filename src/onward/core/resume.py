"""What a run does with what an earlier run left: pure decisions, no I/O.

The engine asks, carries the answer out and asks again with what it found (as h11 returns
events for a connection to act on): whose journal it is, what the partial still holds, which
committed chunks to read again and from where, what a changed source leaves of the copy, and
whether an upload made by an earlier run still belongs to the file. Each answer is a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import NamedTuple

from .identity import Identity, matches, one_response
from .journal import Header
from .plan import ChunkRecord, Plan, without

__all__ = [
    "Change",
    "Owner",
    "Partial",
    "Recheck",
    "after_change",
    "keeps_upload",
    "on_partial",
    "owner",
    "recheck",
    "same_file",
]


class Owner(Enum):
    """Whose copy a journal beside the destination describes."""

    OURS = "ours"
    OTHER_DESTINATION = "other-destination"  # a journal of a copy to another name
    OTHER_SOURCE = "other-source"  # the destination holds an unfinished copy of another source


def same_file(recorded: Identity, current: Identity) -> bool:
    """Whether ``current`` is the very file ``recorded`` was (same device and inode), whatever
    its path: a source renamed since the last run is still its own."""
    return "ino" in current.attrs and all(
        recorded.attrs.get(k) == current.attrs.get(k) for k in ("dev", "ino")
    )


def owner(header: Header, source: str, destination: str, current: Identity) -> Owner:
    if header.destination != destination:
        return Owner.OTHER_DESTINATION
    if header.source != source and not same_file(header.identity, current):
        return Owner.OTHER_SOURCE
    return Owner.OURS


class Partial(NamedTuple):
    """What the committed chunks are worth given the partial's size (``on_partial``)."""

    committed: dict[int, ChunkRecord]
    reset: bool  # the partial is gone: make an empty one
    dropped: tuple[int, ...]  # chunks the partial is too short to hold
    dirty: bool  # the journal no longer says what is true: rewrite it


def on_partial(plan: Plan, committed: Mapping[int, ChunkRecord], present: int | None, dirty: bool) -> Partial:
    """Keep the committed chunks the partial (``present`` bytes, None: gone) still holds."""
    if present is None:
        return Partial({}, True, tuple(sorted(committed)), True)
    short = plan.beyond(committed, present)
    return Partial(without(committed, short), False, tuple(short), dirty or bool(short))


class Recheck(NamedTuple):
    """Committed chunks a resume reads again: from the source (compared with their digests),
    then, of those that matched, from the partial (``read_back``)."""

    source: tuple[int, ...]
    read_back: tuple[int, ...]


def recheck(
    committed: Mapping[int, ChunkRecord], *, full: bool, readable: bool, reread_all: bool, last: int
) -> Recheck:
    """Which committed chunks a resume checks. Nothing where the sink cannot be read back, or
    where every chunk was just read back already (``reread_all``: the partial was not proven
    untouched); all of them, against the source too, with ``--verify full``; else only the
    ``last`` ones, where an interruption does its damage."""
    if not readable or reread_all:
        return Recheck((), ())
    if full:
        everything = tuple(sorted(committed))
        return Recheck(everything, everything)
    return Recheck((), tuple(Plan.last(committed, last)))


class Change(NamedTuple):
    """A source that is not what the journal recorded: why, and whether its committed chunks are
    re-read to keep the ones it still holds (else the copy starts over from zero)."""

    why: str
    keep_matching: bool


def after_change(
    recorded: Identity,
    current: Identity,
    *,
    recheck_on_change: bool,
    since_last_run: bool,
    reason: str | None = None,
) -> Change | None:
    """None while ``current`` is what ``recorded`` describes; else what to do about it. A source
    that knows better than "changed" says so in ``reason`` (a broken HTTP response); a download
    from a server that cannot resume was never going to continue, and says that instead."""
    if matches(recorded, current):
        return None
    if since_last_run:
        why = "the source changed since the last run"
        if one_response(recorded):  # nothing changed: it never could resume
            why = "nothing changed, but the last run's server cannot resume a download"
    else:
        why = reason or "the source changed during the copy"
    return Change(why, recheck_on_change)


def keeps_upload(bound: Identity, bound_size: int, identity: Identity, size: int) -> bool:
    """The upload binding rule: an upload made by an earlier run is continued only for exactly the
    file it was made for (same identity, same size); any other goes to a new upload, so that no
    upload is ever completed from two versions of a file."""
    return bound == identity and bound_size == size
