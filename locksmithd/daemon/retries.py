"""How the daemon retries what fails in a state, and runs what may fail: per-state backoff, each error logged once.

A state that retries (``core.states.RETRYING_STATES``) owns one Backoff, reset when its action
succeeds. Faults only an operator can mend back off straight to the maximum and are logged as errors;
the others grow the pause step by step. A best-effort action runs with a time limit and is only logged
when it fails.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Awaitable, Callable, TypeVar

from locksmithd.core.backoff import Backoff
from locksmithd.core.states import RETRYING_STATES, State
from locksmithd.errors import CorruptDocument, DocumentTooLarge, FleetLockRefused, LocksmithError, StoreDenied, StoreError

log = logging.getLogger("locksmithd.daemon")
T = TypeVar("T")
BEST_EFFORT_TIMEOUT_S = 10.0


class Retries:
    """The retrying states' backoffs and the last error each reported.

    ``on_event("error", kind)`` hears every failure; ``sleep`` is the
    daemon's (tests pass a fake clock's).
    """

    def __init__(self, retry_max_s: float, rng: random.Random, *, sleep: Callable[[float], Awaitable[None]],
                 on_event: Callable[[str, str], None]) -> None:
        self._backoff = {state: Backoff(0.5, retry_max_s, rng) for state in RETRYING_STATES}
        self._reported: dict[State, str] = {}
        self._sleep = sleep
        self._on_event = on_event

    async def until_done(self, state: State, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """Retry ``action`` with ``state``'s backoff until it succeeds (never gives up)."""
        while True:
            try:
                result = await action()
            except (CorruptDocument, DocumentTooLarge, StoreError) as error:
                await self._sleep(self.failed(state, f"cannot {what}", error))
                continue
            self.succeeded(state)
            return result

    def failed(self, state: State, what: str, error: LocksmithError) -> float:
        """Count a failure of ``state``; log it and return how long to pause.

        Faults only an operator can mend (a corrupt or full-size document, a
        denied request, an answer that is no FleetLock server's) back off straight to the maximum and are logged at error
        level; others (etcd unreachable, say) grow the pause step by step and
        are logged as warnings. Either is logged once per distinct message
        until the state's action succeeds; the repeats go to debug, so an
        etcd that is down for days does not fill the journal.
        """
        backoff = self._backoff[state]
        text = error.one_line()
        must_act = (isinstance(error, (CorruptDocument, DocumentTooLarge, StoreDenied))
                    or (isinstance(error, FleetLockRefused) and error.foreign))  # a wrong URL or a login proxy
        if must_act:
            backoff.give_up_gently()
        pause_s = backoff.next_delay_s()
        if self._reported.get(state) == text:
            log.debug("%s: %s; retrying in %.1fs", what, text, pause_s)
        else:
            log.log(logging.ERROR if must_act else logging.WARNING, "%s: %s; retrying in %.1fs", what, text, pause_s)
        self._reported[state] = text
        self._on_event("error", error.kind)
        return pause_s

    def succeeded(self, state: State) -> None:
        """``state``'s action succeeded: its next failure starts from the shortest pause and is logged again."""
        self._backoff[state].reset()
        self._reported.pop(state, None)


class BestEffort:
    """Actions whose failure is logged, never retried or raised (progress notes, the reboot's record)."""

    def __init__(self) -> None:
        self._background: set[asyncio.Future[None]] = set()

    def start(self, what: str, action: Awaitable[None]) -> None:
        """Run ``action`` in the background."""
        task = asyncio.ensure_future(self.run(what, action))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def run(self, what: str, action: Awaitable[None]) -> None:
        """Run ``action`` for at most BEST_EFFORT_TIMEOUT_S; a failure is a warning."""
        try:
            await asyncio.wait_for(action, BEST_EFFORT_TIMEOUT_S)
        except (LocksmithError, asyncio.TimeoutError) as error:
            text = error.one_line() if isinstance(error, LocksmithError) else "timed out"
            log.warning("could not %s: %s", what, text)
