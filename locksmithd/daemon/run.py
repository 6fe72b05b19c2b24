"""The locksmithd daemon: one small handler per state, run by an asyncio loop.

Adapters come in through small interfaces (strategy, rebooter, clock,
coordinator file, notifier) so the flow is testable without D-Bus or etcd.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Awaitable, Callable, Protocol

from locksmithd.core.backoff import Backoff
from locksmithd.core.holder_record import AfterBoot
from locksmithd.core.inhibitors import Inhibitor, describe, shutdown_blockers
from locksmithd.core.states import MAY_HOLD_UNUSED_SLOT, State, StateMachine, Step, published_state
from locksmithd.errors import DocumentTooLarge, LocksmithError, RebootRefused, StoreError
from locksmithd.daemon.retries import BestEffort, Retries
from locksmithd.strategies.base import RebootStrategy
from locksmithd.core.schedule import Window

if TYPE_CHECKING:
    from locksmithd.settings import DaemonSettings

log = logging.getLogger("locksmithd.daemon")
UNHEALTHY_RECHECK_S = 60.0
# While unhealthy the checks run as after boot (at once on systemd's signals, at the latest every
# LOCKSMITHD_HEALTH_RECHECK_INTERVAL); this is how often the boot record is read again and the failures logged.
INHIBITOR_POLL_S = 5.0  # logind has no signal for inhibitors coming and going: ask this often while blocked


@dataclass(frozen=True)
class HealthResult:
    """The outcome of health checks: passed, or not with a summary naming the failed checks."""

    passed: bool
    summary: str


class HealthGate(Protocol):
    """What the daemon needs of the health checks (``daemon/health.py``)."""

    timeout_s: float

    async def wait_until_healthy(self, booted_at: datetime, give_up_at: datetime,
                                 progress: Callable[[str], None]) -> HealthResult:
        """Check until every check passes (True) or ``give_up_at`` passes (False, naming the failures)."""


class Rebooter(Protocol):
    """What the daemon needs of logind."""

    async def reboot(self) -> None: ...

    async def tty_sessions(self) -> list[str]: ...


class RebootHooks(Protocol):
    """What the daemon needs of the hooks (``daemon/hooks.py``): None when all passed, else the failure."""

    async def pre_reboot(self, reason: str) -> str | None: ...

    async def post_boot(self, reason: str) -> str | None: ...


class StatePublisher(Protocol):
    def write(self, strategy: str, state: str, detail: str = "") -> None: ...


def local_now() -> datetime:
    """The current time, timezone-aware, in the host's local zone (windows are local)."""
    return datetime.now().astimezone()


class Daemon:
    """Turns "reboot needed" into at most one coordinated reboot.

    ``reboot_needed`` is set by the sources (``daemon.sources.RebootNeed``,
    which also emits the one "reboot-needed" event). ``warn_users`` is
    called with the ttys and the delay before a reboot. The daemon never
    reboots outside ``window``: it checks before queueing, after acquiring
    and after warning users, and releases the slot when the window closed.

    Each handler takes the Step that led to its state and returns the next
    Step, carrying what the next state needs (such as a pause before trying
    again), so a transition reads in one place. Each state that retries owns
    one Backoff (reset when it succeeds).

    ``on_event(kind, detail)`` hears what an operator may count or search
    for (metrics, journal): "state" (detail: the new state), "slot-taken",
    "reboot-requested" (told as logind is asked, since the reboot may stop the daemon before logind's reply
    is read; a refusal follows as "error"), "slot-released", "reboot-done" (the slot taken before
    a reboot released in the new boot), "health-failed" and "error" (detail:
    the error kind). It must not raise.

    ``settings`` are the daemon's own (the reboot window, the login delay,
    the longest pause between retries): a setting the state handlers read is
    read from it here, so a new one is its row, its field and its use.
    """

    def __init__(self, strategy: RebootStrategy, rebooter: Rebooter, *, settings: DaemonSettings,
                 publisher: StatePublisher, reboot_needed: asyncio.Event,
                 health: HealthGate | None = None, hooks: RebootHooks | None = None,
                 inhibitors: Callable[[], Awaitable[list[Inhibitor]]] | None = None,
                 warn_users: Callable[[list[str], float], object] = lambda t, d: None,
                 notify: Callable[[str], None] = lambda status: None,
                 on_event: Callable[[str, str], None] = lambda kind, detail: None, now: Callable[[], datetime] = local_now,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, rng: random.Random | None = None) -> None:
        self.strategy = strategy
        self.rebooter = rebooter
        self.window: Window | None = settings.window
        self.publisher = publisher
        self.reboot_needed = reboot_needed
        self.login_delay_s = settings.login_delay_s
        retry_max_s = settings.retry_max_s
        self.health = health
        self.hooks = hooks
        self.inhibitors = inhibitors
        self._hook_backoff = Backoff(1.0, max(retry_max_s, 1.0), rng or random.Random())
        self._undo_hooks = False  # pre-reboot hooks ran and the host has not rebooted since
        self.warn_users = warn_users
        self.notify = notify
        self.on_event = on_event
        self.now = now
        self.sleep = sleep
        rng = rng or random.Random()
        self.machine = StateMachine(self._changed)
        self.retries = Retries(retry_max_s, rng, sleep=lambda s: self.sleep(s),
                               on_event=lambda kind, detail: self.on_event(kind, detail))
        self.best_effort = BestEffort()
        self._health_detail = ""
        self._handlers: dict[State, Callable[[Step], Awaitable[Step]]] = {
            State.STARTING: self._starting,
            State.RELEASING_AFTER_BOOT: self._releasing_after_boot,
            State.CHECKING_HEALTH: self._checking_health,
            State.UNHEALTHY: self._unhealthy,
            State.IDLE: self._idle,
            State.WAITING_FOR_WINDOW: self._waiting_for_window,
            State.WAITING_FOR_INHIBITOR: self._waiting_for_inhibitor,
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
        step = Step(State.STARTING)
        try:
            while True:
                step = await self._handlers[step.state](step)
                self.machine.move(step.state)
        except asyncio.CancelledError:
            await self._stop_cleanly()
            raise

    async def _stop_cleanly(self) -> None:
        state = self.machine.state
        if state in MAY_HOLD_UNUSED_SLOT:
            log.info("stopping in %s: giving back any slot taken in this boot", state.value)
            try:
                await asyncio.wait_for(self.strategy.release(), timeout=15)
            except (LocksmithError, asyncio.TimeoutError) as error:
                log.error("could not release the slot while stopping (released after next start): %s",
                          error.one_line() if isinstance(error, LocksmithError) else "timed out")
        elif state == State.REBOOTING:
            log.info("stopping while rebooting: the slot is kept and released after boot")
        log.info("stopped (was %s)", state.value)
        self.machine.move(State.STOPPED)

    def _changed(self, previous: State, current: State) -> None:
        log.info("state %s -> %s", previous.value, current.value)
        try:
            self.publisher.write(self.strategy.label, published_state(current), current.value)
        except LocksmithError as error:
            log.warning("%s", error.one_line())
        self.on_event("state", current.value)
        self.notify(current.value)

    # -- handlers: each takes the step that led here and returns the next ----

    async def _starting(self, step: Step) -> Step:
        return Step(State.RELEASING_AFTER_BOOT if self.strategy.uses_lock else State.IDLE)

    async def _releasing_after_boot(self, step: Step) -> Step:
        found = await self.retries.until_done(State.RELEASING_AFTER_BOOT, "look up the slot held before boot",
                                       self.strategy.held_from_before)
        if found is AfterBoot.NOT_HOLDING:
            return Step(State.IDLE)
        maybe = found is AfterBoot.MAYBE_HELD  # FleetLock: no query, so a slot from before is only possible
        if found in (AfterBoot.NEW_BOOT, AfterBoot.MAYBE_HELD) and self.health is not None:
            log.info("releasing any slot held from before this boot once the host is healthy (the protocol cannot "
                     "say whether one is held)" if maybe else
                     "holding the slot taken before this reboot: releasing it once the host is healthy")
            return Step(State.CHECKING_HEALTH)
        if found is AfterBoot.SAME_BOOT:
            log.info("holding a slot taken in this boot (stopped before rebooting): giving it back")
        await self.retries.until_done(State.RELEASING_AFTER_BOOT, "release the slot held before boot", self.strategy.release)
        log.info("released any reboot slot held from before this boot" if maybe else
                 "released the reboot slot held from before this boot")
        self.on_event("slot-released", "")
        if found in (AfterBoot.NEW_BOOT, AfterBoot.MAYBE_HELD):
            self.on_event("reboot-done", "")
        return Step(State.IDLE)

    async def _checking_health(self, step: Step) -> Step:
        assert self.health is not None
        booted_at = await self.retries.until_done(State.CHECKING_HEALTH, "record the boot", self.strategy.booted)
        give_up_at = booted_at + timedelta(seconds=self.health.timeout_s)
        if self.hooks is not None:
            await self._post_boot_hooks()
            give_up_at = max(give_up_at, self.now() + timedelta(seconds=self.health.timeout_s))
        result = await self.health.wait_until_healthy(booted_at, give_up_at, self._health_progress)
        if result.passed:
            return await self._release_healthy(State.CHECKING_HEALTH, result)
        log.error("health checks failed: %s; keeping the slot and halting the group", result.summary)
        self.on_event("health-failed", result.summary)
        await self.retries.until_done(State.CHECKING_HEALTH, "halt the group",
                               lambda: self.strategy.halt_unhealthy(result.summary))
        return Step(State.UNHEALTHY, detail=result.summary)

    async def _unhealthy(self, step: Step) -> Step:
        """Keep the slot (the group is halted) and keep checking: once healthy, release."""
        assert self.health is not None
        booted_at = await self.retries.until_done(State.UNHEALTHY, "record the boot", self.strategy.booted)
        result = await self.health.wait_until_healthy(
            booted_at, self.now() + timedelta(seconds=UNHEALTHY_RECHECK_S), self._health_progress)
        if result.passed:
            log.info("the host is healthy now; the group stays halted until an operator resumes it")
            return await self._release_healthy(State.UNHEALTHY, result)
        return Step(State.UNHEALTHY, detail=result.summary)

    async def _release_healthy(self, state: State, result: HealthResult) -> Step:
        log.info("health checks passed (%s); releasing the slot", result.summary)
        await self.retries.until_done(state, "release the slot", lambda: self.strategy.release_healthy(result.summary))
        self.on_event("slot-released", result.summary)
        self.on_event("reboot-done", "")
        return Step(State.IDLE)

    async def _post_boot_hooks(self) -> None:
        """Run the post-boot hooks until they all pass, keeping the slot: the host is not back in service yet."""
        assert self.hooks is not None
        while True:
            failure = await self.hooks.post_boot(self.strategy.reason or "")
            if failure is None:
                self._hook_backoff.reset()
                return
            pause_s = self._hook_backoff.next_delay_s()
            log.warning("%s; keeping the slot and trying again in %.0fs", failure, pause_s)
            self._health_progress(failure)
            await self.sleep(pause_s)

    def _health_progress(self, detail: str) -> None:
        if detail == self._health_detail:
            return
        self._health_detail = detail
        log.info("%s: %s", self.machine.state.value, detail)
        self.notify(f"{self.machine.state.value}: {detail}")
        self.best_effort.start("show health progress", self.strategy.note_health(detail))

    async def _idle(self, step: Step) -> Step:
        # The need was logged and emitted once, naming its source, by whoever set the event (daemon/sources.py).
        await self.reboot_needed.wait()
        return Step(State.WAITING_FOR_WINDOW)

    async def _waiting_for_window(self, step: Step) -> Step:
        if step.pause_s:
            await self.sleep(step.pause_s)
        if self.window is None or self.window.contains(self.now()):
            blockers = await self._shutdown_blockers()
            return Step(State.WAITING_FOR_INHIBITOR, detail=blockers) if blockers else Step(State.WAITING_FOR_LOCK)
        now = self.now()
        wait_s = self.window.seconds_until_open(now)
        log.info("outside the reboot window %s; next opening in %.0fs", self.window, wait_s)
        await self.sleep(min(wait_s, 60.0) + 0.05)  # wake at least each minute: clocks jump
        return Step(State.WAITING_FOR_WINDOW)

    async def _waiting_for_inhibitor(self, step: Step) -> Step:
        """Wait, holding no slot, until no logind inhibitor blocks shutdown; then look at the window again."""
        blockers = step.detail
        while blockers:
            log.info("a reboot is blocked by logind inhibitors: %s; waiting without a slot", blockers)
            self.notify(f"{State.WAITING_FOR_INHIBITOR.value}: {blockers}")
            while (now_blocking := await self._shutdown_blockers()) == blockers:
                await self.sleep(INHIBITOR_POLL_S)
            blockers = now_blocking
        log.info("no inhibitor blocks the reboot any more")
        return Step(State.WAITING_FOR_WINDOW)

    async def _waiting_for_lock(self, step: Step) -> Step:
        deadline = self.window.closes_at(self.now()) if self.window else None
        try:
            acquired = await self.strategy.acquire(deadline)
        except (StoreError, DocumentTooLarge) as error:
            pause_s = self.retries.failed(State.WAITING_FOR_LOCK, "cannot queue for a slot", error)
            return Step(State.WAITING_FOR_WINDOW, pause_s=pause_s)
        self.retries.succeeded(State.WAITING_FOR_LOCK)
        if not acquired:
            log.info("the reboot window closed while waiting for a slot")
            return Step(State.WAITING_FOR_WINDOW)
        log.info("acquired a reboot slot")
        self.on_event("slot-taken", "")
        return Step(State.HOLDING)

    async def _holding(self, step: Step) -> Step:
        closed = self._release_if_window_closed()
        if closed is None and (blockers := await self._shutdown_blockers()):
            # Taken while queued; an inhibitor came meanwhile: give it back at once, before any hook drains.
            log.info("logind inhibitors block the reboot (%s); giving the slot back to wait without it", blockers)
            return Step(State.RELEASING)
        if closed is not None or self.hooks is None:
            return closed or Step(State.WARNING_USERS)
        self._undo_hooks = True
        failure = await self.hooks.pre_reboot(self.strategy.reason or "")
        if failure is not None:
            pause_s = self._hook_backoff.next_delay_s()
            log.warning("%s; giving the slot back and trying again in %.0fs", failure, pause_s)
            return Step(State.RELEASING, pause_s=pause_s, detail=failure)
        self._hook_backoff.reset()
        return self._release_if_window_closed() or Step(State.WARNING_USERS)

    async def _warning_users(self, step: Step) -> Step:
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
        blockers = await self._shutdown_blockers()
        if blockers:
            log.info("logind inhibitors block the reboot (%s); giving the slot back to wait without it", blockers)
            return Step(State.RELEASING)
        return self._release_if_window_closed() or Step(State.REBOOTING)

    async def _rebooting(self, step: Step) -> Step:
        await self.best_effort.run("record the reboot request", self.strategy.rebooting())
        # Told before the call: once logind accepts, systemd may stop this process before the reply is read.
        self.on_event("reboot-requested", "")
        try:
            await self.rebooter.reboot()
        except RebootRefused as error:
            pause_s = self.retries.failed(State.REBOOTING, "reboot failed, giving the slot back and trying later", error)
            return Step(State.RELEASING, pause_s=pause_s)
        self.retries.succeeded(State.REBOOTING)
        log.info("reboot accepted by logind; waiting to be stopped")
        await asyncio.Event().wait()  # systemd stops us as part of the reboot
        raise AssertionError("unreachable")

    async def _releasing(self, step: Step) -> Step:
        if self._undo_hooks and self.hooks is not None:
            # Pre-reboot hooks ran (a drain, say) but the host will not reboot now: undo with the post-boot ones.
            self._undo_hooks = False
            failure = await self.hooks.post_boot(self.strategy.reason or "")
            if failure is not None:
                log.error("%s while undoing the pre-reboot hooks (the host did not reboot)", failure)
        await self.retries.until_done(State.RELEASING, "release the reboot slot", self.strategy.release)
        self.on_event("slot-released", "")
        # The pause (after a refused reboot) is spent without the slot, before queueing again.
        return Step(State.WAITING_FOR_WINDOW, pause_s=step.pause_s)

    # -- helpers -------------------------------------------------------------

    async def _shutdown_blockers(self) -> str:
        """Who blocks shutdown and why ("" for nobody, or when inhibitors are ignored or cannot be listed)."""
        if self.inhibitors is None:
            return ""
        try:
            return describe(shutdown_blockers(await self.inhibitors()))
        except LocksmithError as error:
            log.warning("cannot list logind inhibitors, going on as if there were none: %s", error.one_line())
            return ""

    def _release_if_window_closed(self) -> Step | None:
        if self.window is not None and not self.window.contains(self.now()):
            log.info("the reboot window %s closed; releasing the slot", self.window)
            return Step(State.RELEASING)
        return None
