"""``core.throttle``: the arithmetic of --bwlimit, with a clock the test holds."""

from __future__ import annotations

import pytest

from onward.core.throttle import Throttle

MiB = 1 << 20


def test_moving_faster_than_the_rate_waits_off_the_difference() -> None:
    pace = Throttle(rate=10 * MiB, burst=4 * MiB, now=0.0)
    assert pace.delay(5 * MiB, now=0.0) == pytest.approx(0.5)  # no credit at the start
    assert pace.delay(5 * MiB, now=0.5) == pytest.approx(0.5)  # waited, then 5 MiB more


def test_a_long_run_keeps_the_rate_exactly() -> None:
    pace, now, moved = Throttle(rate=50 * MiB, burst=4 * MiB, now=0.0), 0.0, 0
    for _ in range(256):  # 1 GiB in 4 MiB chunks, moved instantly, waiting as told
        moved += 4 * MiB
        now += pace.delay(4 * MiB, now)
    assert moved / now == pytest.approx(50 * MiB, rel=1e-9)


def test_idle_time_earns_at_most_one_burst() -> None:
    pace = Throttle(rate=MiB, burst=2 * MiB, now=0.0)
    assert pace.delay(2 * MiB, now=100.0) == 0.0  # a slow disk: credit capped at the burst
    assert pace.delay(MiB, now=100.0) == pytest.approx(1.0)


@pytest.mark.parametrize("rate, burst", [(0, 1), (1, 0), (-1, 1)])
def test_a_rate_or_burst_that_is_not_positive_is_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        Throttle(rate, burst, 0.0)
