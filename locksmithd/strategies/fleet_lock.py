"""Strategy "fleet-lock": take and give back the slot through any FleetLock server (airlock, ours, ...)."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timezone
from typing import Callable

import aiohttp

from locksmithd.core.backoff import Backoff
from locksmithd.core.fleetlock_protocol import (
    MAX_REPLY_BYTES,
    PRE_REBOOT_PATH,
    PROTOCOL_HEADER,
    STEADY_STATE_PATH,
    Reply,
    error_fields,
    is_html,
    poll_pause_s,
    queue_place,
    reply_excerpt,
    success_problem,
)
from locksmithd.core.holder_record import AfterBoot
from locksmithd.core.names import printable
from locksmithd.errors import FleetLockRefused
from locksmithd.core.strategy_labels import FLEET_LOCK
from locksmithd.strategies.base import WithoutQueue

DECLARATION = FLEET_LOCK
"""This strategy's label, help and config slice (``core/strategy_labels.py``)."""

log = logging.getLogger("locksmithd.strategy")
FIRST_POLL_S = 1.0
REQUEST_TIMEOUT_S = 10.0
# Kinds that say "not yet, ask again": ours, and airlock's "failed_lock" (poseidon/fleetlock's are non-200 too).
WAITING_KINDS = frozenset({"failed_lock_semaphore_full", "failed_lock_queued", "failed_lock_group_halted",
                           "failed_lock"})


class FleetLockStrategy(WithoutQueue):
    """Poll pre-reboot with jittered backoff until granted; release with steady-state after boot.

    The protocol has no query and no halt: at start the host may hold a slot
    from before, so the daemon is told NEW_BOOT and releases (steady-state is
    UnlockIfHeld, harmless when nothing is held) once its health checks pass.
    An unhealthy host keeps its slot, as Zincati does; no group is halted.
    Pace: when the refusal names the place in the queue ("queued at
    position N of M", our server's answers) the next poll comes after
    ``poll_pause_s(N)``: 0.5 s at the head, 0.5 s more per place, at most
    ``poll_max_s`` (LOCKSMITHD_RETRY_MAX), so a freed slot is taken within
    about half a second. Other servers' refusals (airlock's) name no place:
    the pause then grows from 1 s to ``poll_max_s``, as before.
    A refusal is normal operation: logged at INFO the first time and then
    only when the place (or the kind of refusal) changes.
    """

    label = DECLARATION.label
    enabled = True
    uses_lock = True

    def __init__(self, url: str, client_id: str, group: str, *, poll_max_s: float,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 rng: random.Random | None = None) -> None:
        self.url = url.rstrip("/")
        self.client_id = client_id
        self.group = group
        self.poll_max_s = max(poll_max_s, FIRST_POLL_S)
        self.now = now
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._booted_at: datetime | None = None
        self._last_refusal: tuple[str, int, bool] | None = None  # the last refusal logged (kind, status, foreign)
        self._last_wait: tuple[str, int | None] | None = None  # the last waiting refusal logged (kind, position)
        self._place: tuple[int, int] | None = None  # the place named by the last refusal, if any
        self.reason: str | None = None  # why a reboot is needed (logged; FleetLock has nowhere to record it)
        self.boot_id: str | None = None  # FleetLock has nowhere to record it either

    async def held_from_before(self) -> AfterBoot:
        return AfterBoot.MAYBE_HELD  # no query in the protocol: release once healthy (UnlockIfHeld is idempotent)

    async def acquire(self, deadline: datetime | None) -> bool:
        """Ask pre-reboot until granted (``_call``); False (after leaving the queue) when ``deadline`` passes first."""
        backoff = Backoff(FIRST_POLL_S, self.poll_max_s, self._rng)
        while True:
            try:
                await self._call(PRE_REBOOT_PATH)
                self._last_refusal = self._last_wait = None
                return True
            except FleetLockRefused as error:
                self._judge(error, backoff)
                waiting = error.protocol_kind in WAITING_KINDS
            if self._place is not None and waiting:
                backoff.reset()  # a place in the queue sets the pace
                pause_s = poll_pause_s(self._place[0], self.poll_max_s) * self._rng.uniform(0.9, 1.1)
            else:
                pause_s = backoff.next_delay_s()
            if deadline is not None:
                left_s = (deadline - self.now()).total_seconds()
                if left_s <= pause_s:
                    await asyncio.sleep(max(left_s, 0.0))
                    await self._leave_queue()
                    return False
            await asyncio.sleep(pause_s)

    async def rebooting(self) -> None:
        return None  # the protocol records nothing about the reboot

    async def booted(self) -> datetime:
        if self._booted_at is None:
            self._booted_at = self.now()
        return self._booted_at

    async def note_health(self, detail: str) -> None:
        return None

    async def release_healthy(self, detail: str) -> None:
        await self.release()

    async def halt_unhealthy(self, reason: str) -> None:
        log.error("health checks failed (%s): keeping the FleetLock slot; the protocol has no halt, "
                  "so other hosts of group %r wait only while the slot is held", reason, self.group)

    async def release(self) -> None:
        """steady-state (UnlockIfHeld); raises FleetLockRefused unless the answer is the protocol's success."""
        await self._call(STEADY_STATE_PATH)

    def stale_holders(self) -> None:
        return None  # the FleetLock server owns the group

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _judge(self, error: FleetLockRefused, backoff: Backoff) -> None:
        """Log a refusal by kind, once while the same answer repeats (then at debug level): waiting is
        normal; our own bad request, or an answer that is not the protocol's (a wrong URL, a login proxy),
        cannot mend itself soon, so it is an error and asked again only at ``poll_max_s``."""
        kind = error.protocol_kind
        if kind in WAITING_KINDS:
            place = (kind, self._place[0] if self._place else None)
            log.log(logging.DEBUG if place == self._last_wait else logging.INFO, "no slot yet: %s", error.one_line())
            self._last_wait, self._last_refusal = place, None
            return
        self._last_wait = None
        repeated = self._last_refusal == (kind, error.status, error.foreign)
        self._last_refusal = (kind, error.status, error.foreign)
        if kind.startswith("bad_request"):
            hint = "the FleetLock server refuses this host's request (check LOCKSMITHD_FLEETLOCK_GROUP and the " \
                   "machine id): "
        elif error.foreign:
            hint = "check LOCKSMITHD_FLEETLOCK_URL: "
        else:
            log.log(logging.DEBUG if repeated else logging.WARNING, "%s", error.one_line())
            return
        backoff.give_up_gently()
        log.log(logging.DEBUG if repeated else logging.ERROR, "%s%s", hint, error.one_line())

    async def _leave_queue(self) -> None:
        """Best effort: steady-state also removes a queued client (and frees a slot granted unseen)."""
        try:
            await self._call(STEADY_STATE_PATH)
        except FleetLockRefused as error:
            log.info("could not leave the FleetLock queue (the server's grace time will): %s", error.one_line())

    async def _call(self, path: str) -> None:
        """POST one protocol request; FleetLockRefused unless the answer is the protocol's success.

        Redirects are never followed and only a 200 shaped as the protocol's
        success counts (``success_problem``): a proxy's login page or the wrong
        web server must never look like a granted slot or a release.
        """
        body = {"client_params": {"id": self.client_id, "group": self.group}}
        self._place = None
        session = self._session_now()
        try:
            async with session.post(f"{self.url}{path}", json=body, headers={PROTOCOL_HEADER: "true"},
                                    allow_redirects=False) as response:
                reply = await _read_reply(response)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as error:
            raise FleetLockRefused(f"FleetLock server {self.url} unreachable: {type(error).__name__} "
                                   f"{printable(str(error), 200)}") from error
        problem = success_problem(path, reply)
        if problem is None:
            return
        fields = error_fields(reply.body) if reply.status >= 400 else None
        if fields is not None:
            kind, value = fields
            self._place = queue_place(value)
            raise FleetLockRefused(f"FleetLock {path} answered {reply.status} {kind}: {value}", kind,
                                   status=reply.status)
        # A redirect, another 2xx, or a 4xx page in HTML (a login or the wrong site) is no FleetLock server's;
        # a 5xx without the protocol's body is taken as a proxy's while the server restarts.
        foreign = reply.status < 400 or (reply.status < 500 and is_html(reply))
        raise FleetLockRefused(f"FleetLock {path} at {self.url} answered {problem}"
                               f"{': not a FleetLock answer, counted as a refusal' if foreign else ''} "
                               f"({reply_excerpt(reply)})", status=reply.status, foreign=foreign)

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No cookies: the protocol has none, and a login proxy's must not follow this host around.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session


async def _read_reply(response: aiohttp.ClientResponse) -> Reply:
    """Status, content type, redirect target and at most MAX_REPLY_BYTES of the body (never more is read)."""
    body = b""
    while len(body) <= MAX_REPLY_BYTES:
        chunk = await response.content.read(MAX_REPLY_BYTES + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return Reply(response.status, response.headers.get("Content-Type", ""), body[:MAX_REPLY_BYTES],
                 truncated=len(body) > MAX_REPLY_BYTES, location=response.headers.get("Location", ""))

