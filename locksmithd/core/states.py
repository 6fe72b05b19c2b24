"""The daemon's explicit state machine: states, allowed transitions, published names."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable


class State(enum.Enum):
    """Where the daemon is; ``value`` is the name shown in status and logs."""

    STARTING = "starting"
    RELEASING_AFTER_BOOT = "releasing-after-boot"
    CHECKING_HEALTH = "checking-health"
    UNHEALTHY = "unhealthy"
    IDLE = "idle"
    WAITING_FOR_WINDOW = "waiting-for-window"
    WAITING_FOR_INHIBITOR = "waiting-for-inhibitor"
    WAITING_FOR_LOCK = "waiting-for-lock"
    HOLDING = "holding"
    WARNING_USERS = "warning-users"
    REBOOTING = "rebooting"
    RELEASING = "releasing"
    STOPPED = "stopped"


ALLOWED: dict[State, frozenset[State]] = {
    State.STARTING: frozenset({State.RELEASING_AFTER_BOOT, State.IDLE, State.STOPPED}),
    State.RELEASING_AFTER_BOOT: frozenset({State.IDLE, State.CHECKING_HEALTH, State.STOPPED}),
    State.CHECKING_HEALTH: frozenset({State.IDLE, State.UNHEALTHY, State.STOPPED}),
    State.UNHEALTHY: frozenset({State.IDLE, State.STOPPED}),
    State.IDLE: frozenset({State.WAITING_FOR_WINDOW, State.STOPPED}),
    State.WAITING_FOR_WINDOW: frozenset({State.WAITING_FOR_LOCK, State.WAITING_FOR_INHIBITOR, State.STOPPED}),
    State.WAITING_FOR_INHIBITOR: frozenset({State.WAITING_FOR_WINDOW, State.STOPPED}),
    State.WAITING_FOR_LOCK: frozenset({State.HOLDING, State.WAITING_FOR_WINDOW, State.STOPPED}),
    State.HOLDING: frozenset({State.WARNING_USERS, State.RELEASING, State.STOPPED}),
    State.WARNING_USERS: frozenset({State.REBOOTING, State.RELEASING, State.STOPPED}),
    State.REBOOTING: frozenset({State.RELEASING, State.STOPPED}),
    State.RELEASING: frozenset({State.WAITING_FOR_WINDOW, State.STOPPED}),
    State.STOPPED: frozenset(),
}

# Coordinator state file values (locksmith/update_engine convention).
_PUBLISHED = {
    State.STARTING: "starting",
    State.RELEASING_AFTER_BOOT: "starting",
    State.CHECKING_HEALTH: "starting",
    State.UNHEALTHY: "running",
    State.IDLE: "running",
    State.REBOOTING: "rebooting",
    State.STOPPED: "running",
}

# States in which a slot taken in this boot may be held and not yet used.
MAY_HOLD_UNUSED_SLOT = frozenset({State.WAITING_FOR_LOCK, State.HOLDING, State.WARNING_USERS})

# States that retry a failing action and so own a backoff.
RETRYING_STATES = frozenset({State.RELEASING_AFTER_BOOT, State.CHECKING_HEALTH, State.UNHEALTHY,
                             State.WAITING_FOR_LOCK, State.REBOOTING, State.RELEASING})


@dataclass(frozen=True)
class Step:
    """A transition: the next state and the data it needs.

    ``pause_s`` is how long the next state waits before acting (after an
    error, or after a refused reboot the slot is given back first and the
    pause is spent without it). ``detail`` says why (e.g. the failed health
    check that made the host unhealthy).
    """

    state: State
    pause_s: float = 0.0
    detail: str = ""


class TransitionError(RuntimeError):
    """A programming error: a handler asked for a transition the machine forbids."""


class StateMachine:
    """Holds the current state and refuses transitions not in ``ALLOWED``."""

    def __init__(self, on_change: Callable[[State, State], None] | None = None) -> None:
        self.state = State.STARTING
        self._on_change = on_change

    def move(self, target: State) -> None:
        """Move to ``target``; raise TransitionError if it may not follow the current state."""
        if target == self.state:
            return
        if target not in ALLOWED[self.state]:
            raise TransitionError(f"{self.state.value} -> {target.value} is not an allowed transition")
        previous, self.state = self.state, target
        if self._on_change is not None:
            self._on_change(previous, target)


def published_state(state: State) -> str:
    """The STATE= value for the coordinator file: starting, running, reboot-planned or rebooting."""
    return _PUBLISHED.get(state, "reboot-planned")
