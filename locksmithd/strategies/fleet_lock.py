"""Strategy "fleet-lock": take and give back the slot through any FleetLock server (airlock, ours, ...)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from datetime import datetime, timezone
from typing import Any, Callable

import aiohttp

from locksmithd.core.backoff import Backoff
from locksmithd.core.fleetlock_protocol import PRE_REBOOT_PATH, PROTOCOL_HEADER, STEADY_STATE_PATH
from locksmithd.core.holder_record import AfterBoot
from locksmithd.core.names import printable
from locksmithd.errors import FleetLockRefused

log = logging.getLogger("locksmithd.strategy")
FIRST_POLL_S = 1.0
REQUEST_TIMEOUT_S = 10.0
# Kinds that say "not yet, ask again" (ours; airlock and poseidon/fleetlock use other texts, all non-200).
WAITING_KINDS = frozenset({"failed_lock_semaphore_full", "failed_lock_queued", "failed_lock_group_halted"})


class FleetLockStrategy:
    """Poll pre-reboot with jittered backoff until granted; release with steady-state after boot.

    The protocol has no query and no halt: at start the host may hold a slot
    from before, so the daemon is told NEW_BOOT and releases (steady-state is
    UnlockIfHeld, harmless when nothing is held) once its health checks pass.
    An unhealthy host keeps its slot, as Zincati does; no group is halted.
    The poll pause grows from 1 s to ``poll_max_s`` (LOCKSMITHD_RETRY_MAX):
    at the head of the server's queue a slot may stay free that long.
    """

    label = "fleet-lock"
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
        self.reason: str | None = None  # why a reboot is needed (logged; FleetLock has nowhere to record it)
        self.boot_id: str | None = None  # FleetLock has nowhere to record it either

    async def held_from_before(self) -> AfterBoot:
        return AfterBoot.NEW_BOOT  # unknown: release once healthy (UnlockIfHeld is idempotent)

    async def acquire(self, deadline: datetime | None) -> bool:
        """Ask pre-reboot until 200; False (after leaving the queue) when ``deadline`` passes first."""
        backoff = Backoff(FIRST_POLL_S, self.poll_max_s, self._rng)
        while True:
            try:
                await self._call(PRE_REBOOT_PATH)
                return True
            except FleetLockRefused as error:
                self._judge(error, backoff)
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
        """steady-state (UnlockIfHeld); raises FleetLockRefused unless the server answers 200."""
        await self._call(STEADY_STATE_PATH)

    def stale_holders(self) -> None:
        return None  # the FleetLock server owns the group

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _judge(self, error: FleetLockRefused, backoff: Backoff) -> None:
        """Log a refusal by kind: waiting is normal; our own bad request cannot mend itself."""
        kind = error.protocol_kind
        if kind in WAITING_KINDS:
            log.debug("no slot yet: %s", error.one_line())
            return
        if kind.startswith("bad_request"):
            backoff.give_up_gently()
            log.error("the FleetLock server refuses this host's request (check LOCKSMITHD_FLEETLOCK_GROUP and "
                      "the machine id): %s", error.one_line())
            return
        log.warning("%s", error.one_line())

    async def _leave_queue(self) -> None:
        """Best effort: steady-state also removes a queued client (and frees a slot granted unseen)."""
        try:
            await self._call(STEADY_STATE_PATH)
        except FleetLockRefused as error:
            log.info("could not leave the FleetLock queue (the server's grace time will): %s", error.one_line())

    async def _call(self, path: str) -> None:
        """POST one protocol request; FleetLockRefused with the kind and value unless 200."""
        body = {"client_params": {"id": self.client_id, "group": self.group}}
        session = self._session_now()
        try:
            async with session.post(f"{self.url}{path}", json=body, headers={PROTOCOL_HEADER: "true"}) as response:
                raw = await response.content.read(16 * 1024)
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise FleetLockRefused(f"FleetLock server {self.url} unreachable: {type(error).__name__} "
                                   f"{printable(str(error), 200)}") from error
        if status == 200:
            return
        kind, value = _error_fields(raw)
        raise FleetLockRefused(f"FleetLock {path} answered {status} {kind or '(no kind)'}: {value}", kind)

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        return self._session


def _error_fields(raw: bytes) -> tuple[str, str]:
    """The error body's kind and value, bounded and escaped ("" and a note when it is not the shape)."""
    try:
        document: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "", "(no JSON error body)"
    if not isinstance(document, dict):
        return "", "(no JSON error body)"
    kind, value = document.get("kind"), document.get("value")
    return (printable(kind, 100) if isinstance(kind, str) else "",
            printable(value, 500) if isinstance(value, str) else "(no value)")
