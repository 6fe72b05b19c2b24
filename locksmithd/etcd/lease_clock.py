"""One FleetLock replica's soft memory of its clients' leases and followed keys (an optimisation, never a decision)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable

LEASE_MEMORY = 250_000
"""Leases (and followed keys) a replica remembers; past it the oldest are forgotten (one more read each)."""


class LeaseClock:
    """When the leases this replica saw expire, and which key each client follows.

    Thread-safe and bounded (the oldest entries are forgotten). Losing it
    costs one lease TTL read, or one more key read, per client: every
    decision is made from etcd.
    """

    def __init__(self, capacity: int = LEASE_MEMORY, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.clock = clock
        self._lock = threading.Lock()
        self._expiry: OrderedDict[int, float] = OrderedDict()
        self._follows: OrderedDict[str, str] = OrderedDict()

    def left_s(self, lease_id: int) -> float | None:
        """Seconds until ``lease_id`` expires as last seen here, or None when unknown."""
        with self._lock:
            expiry = self._expiry.get(lease_id)
        return None if expiry is None else expiry - self.clock()

    def saw(self, lease_id: int, ttl_s: float) -> None:
        """``lease_id`` had ``ttl_s`` seconds left just now."""
        with self._lock:
            self._expiry[lease_id] = self.clock() + ttl_s
            self._expiry.move_to_end(lease_id)
            while len(self._expiry) > self.capacity:
                self._expiry.popitem(last=False)

    def forget(self, lease_id: int) -> None:
        with self._lock:
            self._expiry.pop(lease_id, None)

    def followed(self, key: str) -> str | None:
        """The key that waiter ``key`` follows, as last seen here."""
        with self._lock:
            return self._follows.get(key)

    def follows(self, key: str, followed: str | None) -> None:
        """Remember (or, with None, forget) the key that waiter ``key`` follows."""
        with self._lock:
            if followed is None:
                self._follows.pop(key, None)
                return
            self._follows[key] = followed
            self._follows.move_to_end(key)
            while len(self._follows) > self.capacity:
                self._follows.popitem(last=False)
