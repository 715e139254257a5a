"""Identity rules, the transfer state machine and retry decisions, driven with no I/O."""

from __future__ import annotations

import pytest

from onward.core.identity import Identity, matches
from onward.core.lifecycle import Lifecycle, LifecycleError, State, Step
from onward.core.retry import Backoff

BASE = Identity("local", 10, {"dev": 1, "ino": 2, "mtime_ns": 3, "ctime_ns": 4})


def test_identity_matches_only_itself() -> None:
    assert matches(BASE, Identity("local", 10, dict(BASE.attrs)))
    assert not matches(BASE, Identity("local", 11, dict(BASE.attrs)))
    assert not matches(BASE, Identity("http", 10, dict(BASE.attrs)))
    for key in BASE.attrs:
        changed = {**BASE.attrs, key: 99}
        assert not matches(BASE, Identity("local", 10, changed)), key


def test_identity_json_round_trip_and_rejects_garbage() -> None:
    assert Identity.from_json(BASE.to_json()) == BASE
    bad: object
    for bad in (
        None,
        [],
        {"kind": 1, "size": 1},
        {"kind": "x", "size": "1"},
        {"kind": "x", "size": 1, "attrs": {"a": []}},
    ):
        with pytest.raises(ValueError):
            Identity.from_json(bad)


def test_lifecycle_happy_path() -> None:
    life = Lifecycle()
    for step, state in [
        (Step.PLANNED, State.COPYING),
        (Step.COPIED, State.VERIFYING),
        (Step.VERIFIED, State.PROMOTING),
        (Step.PROMOTED, State.DONE),
    ]:
        assert life.step(step) is state


def test_lifecycle_damage_rounds_are_bounded() -> None:
    life = Lifecycle(max_rounds=2)
    life.step(Step.PLANNED)
    for _ in range(2):
        life.step(Step.COPIED)
        assert life.step(Step.DAMAGED) is State.COPYING
    life.step(Step.COPIED)
    assert life.step(Step.DAMAGED) is State.FAILED
    assert life.step(Step.ERROR) is State.FAILED  # reporting the failure is allowed once failed


def test_lifecycle_refuses_steps_out_of_order_and_after_the_end() -> None:
    with pytest.raises(LifecycleError):
        Lifecycle().step(Step.PROMOTED)
    life = Lifecycle()
    life.step(Step.INTERRUPT)
    assert life.state is State.INTERRUPTED
    with pytest.raises(LifecycleError):
        life.step(Step.PLANNED)


def test_backoff_grows_is_capped_and_gives_up() -> None:
    policy = Backoff(retries=4, base=1.0, factor=2.0, cap=5.0)
    assert [policy.delay(n, jitter=1.0) for n in range(1, 5)] == [1.0, 2.0, 4.0, 5.0]
    assert policy.delay(1, jitter=0.0) == 0.5  # jitter spreads over [half, full]
    assert policy.delay(5, jitter=0.5) is None
    assert policy.delay(0, jitter=0.5) is None
    assert policy.delay(1, jitter=0.0, retry_after=3.0) == 3.0
    assert policy.delay(1, jitter=0.0, retry_after=100.0) == 5.0
    assert Backoff(retries=0).delay(1, jitter=0.0) is None
