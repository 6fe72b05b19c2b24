"""The fault runs' safety watch: a monitor that survives member faults, and a replay of the key's history."""

from __future__ import annotations

import contextlib
import threading
import time

from locksmithd.errors import StoreError
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints
from locksmithd.etcd.client import EtcdStore, WatchEvent
from harness.fleet import SemaphoreMonitor


def make_store(urls: list[str], timeout_s: float = 1.0) -> EtcdStore:
    return EtcdStore(EtcdSettings(endpoints=parse_endpoints(urls, "faults", "endpoints"), request_timeout_s=timeout_s))


class RobustMonitor(SemaphoreMonitor):
    """SemaphoreMonitor on every member that fails over when its watch breaks or stalls.

    A broken watch is reopened after a read (which moves the store to a live
    member); a guard thread reopens a silent watch when the key has moved on
    (a SIGSTOPped member keeps its stream open but sends nothing).
    """

    def __init__(self, urls: list[str], key_prefix: str, expected_max: int | None = None) -> None:
        super().__init__(urls, key_prefix=key_prefix, expected_max=expected_max)
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
        """The holders of the newest readable version seen."""
        history = self.history
        return history[-1].holders if history else ()

    def _observe(self, raw: bytes | None, revision: int) -> bool:
        new = super()._observe(raw, revision)
        if new:
            self.last_event_at = time.monotonic()
        return new

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
            self._start_watch(self.revision + 1)

    def _guard_loop(self) -> None:
        while not self._halt.wait(1.0):
            try:
                stored = self.store.read(self.key)
            except StoreError:
                continue
            if stored and stored.mod_revision > self.revision and time.monotonic() - self.last_event_at > 1.5:
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

        def on_events(events: list[WatchEvent], revision: int) -> None:
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
