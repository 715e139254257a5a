"""The resume decisions (core/resume.py), driven with no I/O: values in, a value out."""

from __future__ import annotations

from onward.core.identity import Identity
from onward.core.journal import Header
from onward.core.plan import ChunkRecord, Plan
from onward.core.resume import (
    Change,
    Owner,
    Partial,
    Recheck,
    after_change,
    keeps_upload,
    on_partial,
    owner,
    recheck,
    same_file,
)

FILE = Identity("local", 10, {"dev": 1, "ino": 2, "mtime_ns": 3, "ctime_ns": 4})
EDITED = Identity("local", 10, {"dev": 1, "ino": 2, "mtime_ns": 5, "ctime_ns": 6})
ONE_RESPONSE = Identity("http", 10, {"response": "no-ranges"})
HEADER = Header("/src", "/dst", FILE, chunk_size=4, total_size=10, created=0.0)
PLAN = Plan(10, 4)  # chunks of 4, 4 and 2 bytes


def chunks(*indexes: int) -> dict[int, ChunkRecord]:
    return {i: ChunkRecord(i, PLAN.span(i)[1], bytes([i]) * 16) for i in indexes}


def test_a_journal_is_ours_only_for_this_destination_and_this_source() -> None:
    assert owner(HEADER, "/src", "/dst", FILE) is Owner.OURS
    assert owner(HEADER, "/src", "/other", FILE) is Owner.OTHER_DESTINATION
    assert (
        owner(HEADER, "/elsewhere", "/dst", EDITED._replace(attrs={"dev": 9, "ino": 9})) is Owner.OTHER_SOURCE
    )
    # the same file under another name (renamed since): still ours
    assert owner(HEADER, "/renamed", "/dst", EDITED) is Owner.OURS


def test_same_file_needs_an_inode_and_compares_device_and_inode() -> None:
    assert same_file(FILE, EDITED)
    assert not same_file(FILE, Identity("local", 10, {"dev": 1, "ino": 3}))
    assert not same_file(FILE, ONE_RESPONSE)  # no inode: never the same file by name alone


def test_a_partial_that_is_gone_drops_everything_and_is_made_again() -> None:
    assert on_partial(PLAN, chunks(0, 1), None, dirty=False) == Partial({}, True, (0, 1), True)
    assert on_partial(PLAN, {}, None, dirty=False) == Partial({}, True, (), True)


def test_a_partial_cut_short_drops_the_chunks_past_its_end() -> None:
    assert on_partial(PLAN, chunks(0, 1, 2), 8, dirty=False) == Partial(chunks(0, 1), False, (2,), True)
    assert on_partial(PLAN, chunks(0, 1), 5, dirty=False) == Partial(chunks(0), False, (1,), True)


def test_a_partial_that_holds_every_committed_chunk_keeps_them_and_the_journal() -> None:
    assert on_partial(PLAN, chunks(0, 1), 10, dirty=False) == Partial(chunks(0, 1), False, (), False)
    assert on_partial(PLAN, chunks(0), 10, dirty=True).dirty  # a damaged tail: rewritten anyway


def test_recheck_reads_nothing_from_a_sink_that_cannot_be_read() -> None:
    for full in (False, True):
        assert recheck(chunks(0, 1, 2), full=full, readable=False, reread_all=False, last=2) == Recheck(
            (), ()
        )


def test_recheck_reads_nothing_again_after_reading_everything_back() -> None:
    assert recheck(chunks(0, 1, 2), full=True, readable=True, reread_all=True, last=2) == Recheck((), ())


def test_recheck_full_checks_every_chunk_against_the_source_then_the_partial() -> None:
    assert recheck(chunks(2, 0, 1), full=True, readable=True, reread_all=False, last=1) == Recheck(
        (0, 1, 2), (0, 1, 2)
    )


def test_recheck_of_a_proven_partial_reads_back_only_the_last_chunks() -> None:
    assert recheck(chunks(0, 1, 2), full=False, readable=True, reread_all=False, last=2) == Recheck(
        (), (1, 2)
    )
    assert recheck(chunks(0, 1, 2), full=False, readable=True, reread_all=False, last=0) == Recheck((), ())


def test_an_unchanged_source_needs_nothing() -> None:
    assert after_change(FILE, FILE, recheck_on_change=True, since_last_run=True) is None
    assert after_change(FILE, FILE, recheck_on_change=False, since_last_run=False, reason="x") is None


def test_a_changed_source_keeps_matching_chunks_only_where_rechecking_is_cheap() -> None:
    assert after_change(FILE, EDITED, recheck_on_change=True, since_last_run=True) == Change(
        "the source changed since the last run", True
    )
    assert after_change(FILE, EDITED, recheck_on_change=False, since_last_run=False) == Change(
        "the source changed during the copy", False
    )


def test_a_source_that_knows_why_it_changed_says_so_during_the_copy() -> None:
    change = after_change(
        FILE, EDITED, recheck_on_change=False, since_last_run=False, reason="the response broke"
    )
    assert change == Change("the response broke", False)


def test_a_server_that_cannot_resume_is_not_called_a_change() -> None:
    again = Identity("http", 10, {"response": "no-ranges", "nonce": "b"})
    change = after_change(ONE_RESPONSE, again, recheck_on_change=False, since_last_run=True)
    assert change == Change("nothing changed, but the last run's server cannot resume a download", False)


def test_an_upload_is_continued_only_for_exactly_the_file_it_was_made_for() -> None:
    assert keeps_upload(FILE, 10, FILE, 10)
    assert not keeps_upload(FILE, 10, EDITED, 10)
    assert not keeps_upload(FILE, 10, FILE, 11)
