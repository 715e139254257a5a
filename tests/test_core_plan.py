"""The plan: chunk spans cover the file exactly once; remaining/rebase/beyond mean what they say."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onward.core.plan import ChunkRecord, Plan, without

chunks = st.integers(min_value=1, max_value=10**6)


@st.composite
def sizes_and_chunks(draw: st.DrawFn) -> tuple[int, int]:
    """A chunk size and a total of at most a few hundred chunks, often not a multiple of it."""
    chunk = draw(chunks)
    count = draw(st.integers(0, 300))
    short = draw(st.integers(0, chunk - 1)) if count else 0
    return max(count * chunk - short, 0), chunk


def rec(plan: Plan, index: int) -> ChunkRecord:
    return ChunkRecord(index, plan.span(index)[1], bytes(16))


@given(sizes_and_chunks())
def test_spans_tile_the_file_exactly(sc: tuple[int, int]) -> None:
    total, chunk = sc
    plan = Plan(total, chunk)
    position = 0
    for index in range(plan.chunk_count):
        offset, length = plan.span(index)
        assert offset == position and 0 < length <= chunk
        position += length
    assert position == total


@given(sizes_and_chunks(), st.data())
def test_remaining_is_the_complement_of_committed(sc: tuple[int, int], data: st.DataObject) -> None:
    total, chunk = sc
    plan = Plan(total, chunk)
    picked = data.draw(st.sets(st.integers(0, max(plan.chunk_count - 1, 0)))) if plan.chunk_count else set()
    committed = {i: rec(plan, i) for i in picked}
    assert sorted(set(plan.remaining(committed)) | picked) == list(range(plan.chunk_count))
    assert plan.is_complete(committed) == (len(picked) == plan.chunk_count)
    assert plan.committed_bytes(committed) == sum(plan.span(i)[1] for i in picked)


def test_empty_file_is_complete_with_no_chunks() -> None:
    plan = Plan(0, 4096)
    assert plan.chunk_count == 0 and plan.is_complete({}) and plan.remaining({}) == []


def test_span_out_of_range_raises() -> None:
    with pytest.raises(IndexError):
        Plan(10, 4).span(3)


def test_rebase_keeps_only_chunks_that_still_fit() -> None:
    old = Plan(10, 4)  # chunks of 4, 4, 2
    committed = {i: rec(old, i) for i in range(3)}
    shrunk = Plan(8, 4)  # chunks of 4, 4: chunk 2 is gone
    assert sorted(shrunk.rebase(committed)) == [0, 1]
    grown = Plan(12, 4)  # chunk 2 is now 4 bytes long: the 2-byte record no longer fits
    assert sorted(grown.rebase(committed)) == [0, 1]


def test_beyond_finds_chunks_past_a_short_partial() -> None:
    plan = Plan(12, 4)
    committed = {i: rec(plan, i) for i in range(3)}
    assert plan.beyond(committed, 12) == []
    assert plan.beyond(committed, 7) == [1, 2]
    assert plan.beyond(committed, 0) == [0, 1, 2]


def test_last_and_without() -> None:
    plan = Plan(40, 4)
    committed = {i: rec(plan, i) for i in (0, 3, 5, 9)}
    assert Plan.last(committed, 2) == [5, 9]
    assert Plan.last(committed, 0) == []
    assert sorted(without(committed, [3, 9])) == [0, 5]


def test_invalid_plans_are_refused() -> None:
    with pytest.raises(ValueError):
        Plan(10, 0)
    with pytest.raises(ValueError):
        Plan(-1, 4)


def test_unclaimed_chunks_are_the_uncommitted_ones_the_partial_holds_in_full() -> None:
    plan = Plan(10, 4)  # chunks of 4, 4, 2
    assert plan.unclaimed({0: rec(plan, 0)}, 10) == [1, 2]
    assert plan.unclaimed({0: rec(plan, 0)}, 9) == [1]  # chunk 2 only in part
    assert plan.unclaimed({}, 3) == []
    assert plan.unclaimed({1: rec(plan, 1)}, 10) == [0, 2]
