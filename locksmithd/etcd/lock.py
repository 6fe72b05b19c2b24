"""The one compare-and-swap path for the semaphore document.

Every write reads the value and its ``mod_revision``, applies a pure
function, and writes guarded by that revision. A lost race is retried here
and only here (with jitter); an ambiguous write is resolved by reading back.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from locksmithd.errors import AmbiguousWrite, NotHolder, WriteConflict
from locksmithd.etcd.keys import semaphore_key
from locksmithd.core.semaphore import Semaphore, decode, initial_semaphore
from locksmithd.etcd.store import KeyValueStore, Versioned

log = logging.getLogger("locksmithd.lock")


class _LostRace(Exception):
    """Internal: the guarded write found a newer revision."""


@dataclass(frozen=True)
class Snapshot:
    """A decoded semaphore and the revision it was read at (None: key absent)."""

    semaphore: Semaphore
    mod_revision: int | None


@dataclass(frozen=True)
class Change:
    """A named pure change and the test that tells whether it is already in effect."""

    name: str
    apply: Callable[[Semaphore], Semaphore]
    in_effect: Callable[[Semaphore], bool]


class SemaphoreClient:
    """Lock, unlock and resize one group's semaphore through a KeyValueStore.

    All methods raise StoreError subclasses when the store cannot answer,
    CorruptDocument when the stored document is invalid (it is never
    overwritten), and WriteConflict after ``max_attempts`` lost races.
    """

    def __init__(
        self,
        store: KeyValueStore,
        group: str = "",
        key_prefix: str = "",
        *,
        max_attempts: int = 64,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.group = group
        self.key = semaphore_key(group, key_prefix)
        self._max_attempts = max_attempts
        self._rng = rng or random.Random()

    def read(self) -> Snapshot:
        """The current value; an absent key reads as locksmith's initial value."""
        stored = self.store.read(self.key)
        return self._snapshot(stored)

    def read_raw(self) -> Versioned | None:
        """The stored bytes, undecoded, for inspecting a corrupt document."""
        return self.store.read(self.key)

    def lock(self, holder: str, info: Mapping[str, Any] | None = None) -> Semaphore:
        """Take a slot for ``holder``; idempotent; SemaphoreFull when none is free."""
        return self.update(Change(f"lock {holder}", lambda s: s.lock(holder, info), lambda s: s.holds(holder)))

    def unlock(self, holder: str) -> Semaphore:
        """Release ``holder``'s slot; NotHolder if it holds none."""
        return self.update(Change(f"unlock {holder}", lambda s: s.unlock(holder), lambda s: not s.holds(holder)))

    def set_max(self, new_max: int) -> Semaphore:
        """Set the maximum; values below the holder count are allowed (they drain)."""
        return self.update(Change(f"set-max {new_max}", lambda s: s.set_max(new_max), lambda s: s.max == new_max))

    def reset(self, new_max: int, expected: Versioned | None,
              extra_fields: Mapping[str, Any] | None = None) -> Semaphore:
        """Replace whatever is stored (even a corrupt document) by an empty semaphore.

        ``extra_fields`` are top-level fields to keep beside locksmith's (the
        caller picks them from the old document). Guarded by ``expected`` (what
        the operator saw): if the key changed since, WriteConflict is raised
        and nothing is written; DocumentTooLarge if the fields do not fit.
        """
        fresh = Semaphore(1, (), {}, extra_fields or {}).set_max(new_max)
        payload = fresh.encode()
        try:
            if expected is None:
                written = self.store.create(self.key, payload)
            else:
                written = self.store.swap(self.key, payload, expected.mod_revision)
        except AmbiguousWrite:
            back = self.store.read(self.key)
            written = back is not None and back.value == payload
        if not written:
            raise WriteConflict(f"{self.key} changed since it was read; nothing was reset, look again")
        return fresh

    def update(self, change: Change) -> Semaphore:
        """Apply ``change`` with compare-and-swap, retrying lost races with jitter.

        Returns the value as written (or as found, when already in effect).
        Domain errors (SemaphoreFull, NotHolder, InvalidMax) from the first
        application propagate; after an ambiguous write they are resolved by
        ``change.in_effect`` on the value read back.
        """
        state = {"ambiguous": False}
        retrying = Retrying(
            retry=retry_if_exception_type(_LostRace),
            wait=wait_random_exponential(multiplier=0.002, max=0.25),
            stop=stop_after_attempt(self._max_attempts),
            before_sleep=self._log_retry(change),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(change, state)
        except _LostRace as exc:
            raise WriteConflict(
                f"{change.name}: {self.key} kept changing; gave up after {self._max_attempts} attempts"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, change: Change, state: dict[str, bool]) -> Semaphore:
        snapshot = self.read()
        if state["ambiguous"] and change.in_effect(snapshot.semaphore):
            return snapshot.semaphore
        try:
            new = change.apply(snapshot.semaphore)
        except NotHolder:
            if state["ambiguous"]:  # our earlier unlock landed before another write
                return snapshot.semaphore
            raise
        if new == snapshot.semaphore and snapshot.mod_revision is not None:
            return new
        payload = new.encode()
        try:
            if snapshot.mod_revision is None:
                written = self.store.create(self.key, payload)
            else:
                written = self.store.swap(self.key, payload, snapshot.mod_revision)
        except AmbiguousWrite:
            state["ambiguous"] = True
            log.warning("%s: write outcome unknown, reading back %s", change.name, self.key)
            back = self.store.read(self.key)
            if back is not None and back.value == payload:
                return new
            raise _LostRace() from None
        if not written:
            raise _LostRace()
        return new

    def _snapshot(self, stored: Versioned | None) -> Snapshot:
        if stored is None:
            return Snapshot(initial_semaphore(), None)
        return Snapshot(decode(stored.value, self.key), stored.mod_revision)

    def _log_retry(self, change: Change) -> Callable[[RetryCallState], None]:
        def before_sleep(retry_state: RetryCallState) -> None:
            pause = retry_state.next_action.sleep if retry_state.next_action else 0.0
            log.debug("%s: lost a race on %s, retry %d in %.3fs", change.name, self.key, retry_state.attempt_number, pause)

        return before_sleep
