"""The life of one transfer as a state machine: states and transitions as data.

    PREPARING ──planned──▶ COPYING ──copied──▶ VERIFYING ──verified──▶ PROMOTING ──promoted──▶ DONE
                              ▲                    │
                              └──────damaged───────┘   (bounded: MAX_ROUNDS, then FAILED)

Any state but DONE may go to FAILED (an error) or INTERRUPTED (a stop request).
A "damaged" round happens when verification finds chunks that no longer match
or a source that changed; after ``max_rounds`` of those the transfer fails
instead of chasing a source that never settles.
"""

from __future__ import annotations

import enum

__all__ = ["Lifecycle", "LifecycleError", "State", "Step"]


class State(enum.Enum):
    PREPARING = "preparing"
    COPYING = "copying"
    VERIFYING = "verifying"
    PROMOTING = "promoting"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class Step(enum.Enum):
    PLANNED = "planned"
    COPIED = "copied"
    DAMAGED = "damaged"
    VERIFIED = "verified"
    PROMOTED = "promoted"
    ERROR = "error"
    INTERRUPT = "interrupt"


TRANSITIONS: dict[tuple[State, Step], State] = {
    (State.PREPARING, Step.PLANNED): State.COPYING,
    (State.COPYING, Step.COPIED): State.VERIFYING,
    (State.VERIFYING, Step.DAMAGED): State.COPYING,
    (State.VERIFYING, Step.VERIFIED): State.PROMOTING,
    (State.PROMOTING, Step.PROMOTED): State.DONE,
}
FINAL = frozenset({State.DONE, State.FAILED, State.INTERRUPTED})


class LifecycleError(Exception):
    """A step the state machine does not allow: a bug in the caller, never user input."""


class Lifecycle:
    __slots__ = ("max_rounds", "rounds", "state")

    def __init__(self, max_rounds: int = 3) -> None:
        self.max_rounds = max_rounds
        self.state = State.PREPARING
        self.rounds = 0

    def step(self, step: Step) -> State:
        if step is Step.ERROR and self.state is State.FAILED:
            return self.state  # a failure found by the machine itself, now reported
        if self.state in FINAL:
            raise LifecycleError(f"{step.value} after {self.state.value}")
        if step is Step.ERROR:
            self.state = State.FAILED
        elif step is Step.INTERRUPT:
            self.state = State.INTERRUPTED
        else:
            try:
                self.state = TRANSITIONS[self.state, step]
            except KeyError:
                raise LifecycleError(f"{step.value} in {self.state.value}") from None
            if step is Step.DAMAGED:
                self.rounds += 1
                if self.rounds > self.max_rounds:
                    self.state = State.FAILED
        return self.state
