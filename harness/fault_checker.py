"""The fault runs' safety checker: a monitor that survives member faults, and a replay of the key's history."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

from locksmithd.errors import StoreError
from locksmithd.etcd.settings import EtcdSettings, parse_endpoints
from locksmithd.etcd.client import EtcdStore
from harness.fleet import SemaphoreMonitor


def make_store(urls: list[str], timeout_s: float = 1.0) -> EtcdStore:
    return EtcdStore(EtcdSettings(endpoints=parse_endpoints(urls, "faults", "endpoints"), request_timeout_s=timeout_s))


class RobustMonitor(SemaphoreMonitor):
    """SemaphoreMonitor on every member that fails over when its watch breaks or stalls.

    A broken watch is reopened after a read (which moves the store to a live
    member); a guard thread reopens a silent watch when the key has moved on
    (a SIGSTOPped member keeps its stream open but sends nothing).
    """

    def __init__(self, urls: list[str], key_prefix: str) -> None:
        super().__init__(urls, key_prefix=key_prefix)
        self.store.close()
        self.store = make_store(urls)
        self.last_event_at = time.monotonic()
        self._guard = threading.Thread(target=self._guard_loop, name="monitor guard", daemon=True)
        self._halt = threading.Event()
        self._restart_lock = threading.Lock()

    def start(self) -> None:
        super().start()
        self._guard.start()

    def stop(self) -> None:
        self._stopped = True
        self._halt.set()
        if self._guard.is_alive():
            self._guard.join(timeout=5)
        super().stop()

    def holders(self) -> tuple[str, ...]:
        return self.history[-1][3] if self.history else ()

    @property
    def revision(self) -> int:
        """The newest revision of the key seen so far."""
        return self._last_revision

    def _observe(self, raw: bytes, revision: int) -> None:
        if revision <= self._last_revision:
            return  # a reopened watch may repeat what we saw
        self.last_event_at = time.monotonic()
        super()._observe(raw, revision)

    def _on_broken(self, error: BaseException) -> None:
        if not self._stopped:
            time.sleep(0.2)
            self._reopen()

    def _reopen(self) -> None:
        with self._restart_lock:
            if self._stopped:
                return
            with contextlib.suppress(StoreError):
                self.store.read(self.key)
            if self._watch is not None:
                self._watch.cancel()
            self._start_watch(self._last_revision + 1)

    def _guard_loop(self) -> None:
        while not self._halt.wait(1.0):
            try:
                stored = self.store.read(self.key)
            except StoreError:
                continue
            if stored and stored.mod_revision > self._last_revision and time.monotonic() - self.last_event_at > 1.5:
                self._reopen()


def replay_history(urls: list[str], key: str, timeout_s: float = 30.0) -> list[tuple[int, bytes | None]]:
    """Every version of ``key`` from revision 1 to now, as (mod revision, value or None if deleted)."""
    store = make_store(urls, timeout_s=3.0)
    try:
        last = store.read(key)
        if last is None:
            return []
        seen: list[tuple[int, bytes | None]] = []
        done = threading.Event()
        broken: list[BaseException] = []

        def on_events(events: list[Any], revision: int) -> None:
            for event in events:
                seen.append((event.entry.mod_revision, event.entry.value if event.kind == "put" else None))
            if seen and seen[-1][0] >= last.mod_revision:
                done.set()

        def on_broken(error: BaseException) -> None:
            broken.append(error)
            done.set()

        watch = store.watch_range(key, key + "\0", 1, on_events, on_broken)
        done.wait(timeout_s)
        watch.cancel()
        if broken or not seen or seen[-1][0] < last.mod_revision:
            raise RuntimeError(f"history replay of {key} incomplete: {broken or 'timed out'}")
        return seen
    finally:
        store.close()


def judge_history(history: list[tuple[int, bytes | None]], max_expected: int) -> tuple[list[str], int]:
    """Violations in a replayed history (holders > max, or max changed under us) and the most holders."""
    violations, most = [], 0
    for revision, raw in history:
        if raw is None:
            violations.append(f"revision {revision}: the semaphore was deleted")
            continue
        try:
            document = json.loads(raw)
            holders, max_slots = list(document["holders"] or ()), int(document["max"])
        except (ValueError, KeyError, TypeError):
            violations.append(f"revision {revision}: undecodable document {raw[:80]!r}")
            continue
        most = max(most, len(holders))
        if len(holders) > max_slots or max_slots != max_expected or len(set(holders)) != len(holders):
            violations.append(f"revision {revision}: holders {holders} with max {max_slots}")
    return violations, most
