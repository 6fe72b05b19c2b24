"""The locksmithd daemon: one small handler per state, run by an asyncio loop.

Adapters come in through small interfaces (strategy, rebooter, clock,
coordinator file, notifier) so the flow is testable without D-Bus or etcd.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime
from typing import Awaitable, Callable, Protocol

from locksmithd.core.backoff import Backoff
from locksmithd.errors import CorruptDocument, LocksmithError, RebootRefused, StoreError
from locksmithd.core.states import MAY_HOLD_UNUSED_SLOT, State, StateMachine, published_state
from locksmithd.strategies.base import RebootStrategy
from locksmithd.core.window import RebootWindow

log = logging.getLogger("locksmithd.daemon")


class Rebooter(Protocol):
    """What the daemon needs of logind."""

    async def reboot(self) -> None: ...

    async def tty_sessions(self) -> list[str]: ...


class StatePublisher(Protocol):
    def write(self, strategy: str, state: str, detail: str = "") -> None: ...


def local_now() -> datetime:
    """The current time, timezone-aware, in the host's local zone (windows are local)."""
    return datetime.now().astimezone()


class Daemon:
    """Turns "reboot needed" into at most one coordinated reboot.

    ``reboot_needed`` is set by the update_engine watcher. ``warn_users`` is
    called with the ttys and the delay before a reboot. The daemon never
    reboots outside ``window``: it checks before queueing, after acquiring
    and after warning users, and releases the slot when the window closed.
    """

    def __init__(self, strategy: RebootStrategy, rebooter: Rebooter, *, window: RebootWindow | None,
                 publisher: StatePublisher, reboot_needed: asyncio.Event, login_delay_s: float = 300.0,
                 retry_max_s: float = 60.0, warn_users: Callable[[list[str], float], object] = lambda t, d: None,
                 notify: Callable[[str], None] = lambda status: None, now: Callable[[], datetime] = local_now,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, rng: random.Random | None = None) -> None:
        self.strategy = strategy
        self.rebooter = rebooter
        self.window = window
        self.publisher = publisher
        self.reboot_needed = reboot_needed
        self.login_delay_s = login_delay_s
        self.retry_max_s = retry_max_s
        self.warn_users = warn_users
        self.notify = notify
        self.now = now
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.machine = StateMachine(self._changed)
        self.reboot_accepted = False
        self.stopped_in: State | None = None
        self._after_release = State.WAITING_FOR_WINDOW
        self._pause_after_release_s = 0.0
        self._handlers: dict[State, Callable[[], Awaitable[State]]] = {
            State.STARTING: self._starting,
            State.RELEASING_AFTER_BOOT: self._releasing_after_boot,
            State.IDLE: self._idle,
            State.WAITING_FOR_WINDOW: self._waiting_for_window,
            State.WAITING_FOR_LOCK: self._waiting_for_lock,
            State.HOLDING: self._holding,
            State.WARNING_USERS: self._warning_users,
            State.REBOOTING: self._rebooting,
            State.RELEASING: self._releasing,
        }

    @property
    def state(self) -> State:
        return self.machine.state

    async def run(self) -> None:
        """Run until cancelled (SIGTERM); on the way out give back an unused slot."""
        try:
            while True:
                self.machine.move(await self._handlers[self.machine.state]())
        except asyncio.CancelledError:
            await self._stop_cleanly()
            raise

    async def _stop_cleanly(self) -> None:
        state = self.stopped_in = self.machine.state
        if state in MAY_HOLD_UNUSED_SLOT and not self.reboot_accepted:
            log.info("stopping in %s: giving back any slot taken in this boot", state.value)
            try:
                await asyncio.wait_for(self.strategy.release(), timeout=15)
            except (LocksmithError, asyncio.TimeoutError) as error:
                log.error("could not release the slot while stopping (released after next start): %s", error)
        elif state == State.REBOOTING:
            log.info("stopping while rebooting: the slot is kept and released after boot")
        self.machine.move(State.STOPPED)

    def _changed(self, previous: State, current: State) -> None:
        log.info("state %s -> %s", previous.value, current.value)
        try:
            self.publisher.write(self.strategy.label, published_state(current), current.value)
        except LocksmithError as error:
            log.warning("%s", error.one_line())
        self.notify(current.value)

    # -- handlers: each returns the next state ------------------------------

    async def _starting(self) -> State:
        return State.RELEASING_AFTER_BOOT if self.strategy.uses_lock else State.IDLE

    async def _releasing_after_boot(self) -> State:
        released = await self._until_done("release the slot held before boot", self.strategy.release_after_boot)
        if released:
            log.info("released the reboot slot held from before this boot")
        return State.IDLE

    async def _idle(self) -> State:
        await self.reboot_needed.wait()
        log.info("a reboot is needed")
        return State.WAITING_FOR_WINDOW

    async def _waiting_for_window(self) -> State:
        if self.window is None:
            return State.WAITING_FOR_LOCK
        now = self.now()
        if self.window.contains(now):
            return State.WAITING_FOR_LOCK
        wait_s = self.window.seconds_until_open(now)
        log.info("outside the reboot window %s; next opening in %.0fs", self.window, wait_s)
        await self.sleep(min(wait_s, 60.0) + 0.05)  # wake at least each minute: clocks jump
        return State.WAITING_FOR_WINDOW

    async def _waiting_for_lock(self) -> State:
        deadline = self.window.closes_at(self.now()) if self.window else None
        try:
            acquired = await self.strategy.acquire(deadline)
        except StoreError as error:
            await self._pause(f"cannot queue for a slot: {error.one_line()}")
            return State.WAITING_FOR_WINDOW
        if not acquired:
            log.info("the reboot window closed while waiting for a slot")
            return State.WAITING_FOR_WINDOW
        log.info("acquired a reboot slot")
        return State.HOLDING

    async def _holding(self) -> State:
        return self._release_if_window_closed() or State.WARNING_USERS

    async def _warning_users(self) -> State:
        try:
            ttys = await self.rebooter.tty_sessions()
        except LocksmithError as error:
            log.warning("cannot list login sessions: %s", error.one_line())
            ttys = []
        if ttys:
            log.info("warning users on %s; rebooting in %.0fs", ", ".join(ttys), self.login_delay_s)
            self.warn_users(ttys, self.login_delay_s)
            if self.login_delay_s > 0:
                await self.sleep(self.login_delay_s)
        return self._release_if_window_closed() or State.REBOOTING

    async def _rebooting(self) -> State:
        log.info("asking logind to reboot")
        try:
            await self.rebooter.reboot()
        except RebootRefused as error:
            log.error("reboot failed, giving the slot back and trying later: %s", error.one_line())
            self._pause_after_release_s = self._backoff_s(3)
            return State.RELEASING
        self.reboot_accepted = True
        log.info("reboot accepted by logind; waiting to be stopped")
        await asyncio.Event().wait()  # systemd stops us as part of the reboot
        raise AssertionError("unreachable")

    async def _releasing(self) -> State:
        await self._until_done("release the reboot slot", self.strategy.release)
        if self._pause_after_release_s:
            pause, self._pause_after_release_s = self._pause_after_release_s, 0.0
            await self.sleep(pause)
        return State.WAITING_FOR_WINDOW

    # -- helpers -------------------------------------------------------------

    def _release_if_window_closed(self) -> State | None:
        if self.window is not None and not self.window.contains(self.now()):
            log.info("the reboot window %s closed; releasing the slot", self.window)
            return State.RELEASING
        return None

    async def _until_done(self, what: str, action: Callable[[], Awaitable[bool] | Awaitable[None]]) -> bool:
        """Retry ``action`` with capped, jittered backoff until it succeeds (never gives up)."""
        attempt = 0
        reported: str | None = None
        while True:
            try:
                return bool(await action())
            except CorruptDocument as error:
                attempt = max(attempt, 6)  # an operator must act: retry slowly
                # Say it once per distinct fault: it stays until an operator repairs the document.
                text = error.one_line()
                log.log(logging.DEBUG if text == reported else logging.ERROR, "cannot %s: %s", what, text)
                reported = text
            except StoreError as error:
                log.warning("cannot %s yet: %s", what, error.one_line())
            attempt += 1
            await self.sleep(self._backoff_s(attempt))

    async def _pause(self, why: str) -> None:
        pause = self._backoff_s(2)
        log.warning("%s; retrying in %.1fs", why, pause)
        await self.sleep(pause)

    def _backoff_s(self, attempt: int) -> float:
        backoff = Backoff(0.5, self.retry_max_s, self.rng, attempt=attempt)
        return backoff.next_delay_s()
