"""Wiring the daemon's observers: Prometheus metrics (when an address is set) fed by daemon and etcd events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from locksmithd.core.states import State
from locksmithd.errors import StoreError

if TYPE_CHECKING:
    from locksmithd.etcd.lock import SemaphoreClient
    from locksmithd.observe.group import GroupFigures
    from locksmithd.observe.metrics import DaemonMetrics
    from locksmithd.settings import DaemonSettings
    from locksmithd.strategies.base import RebootStrategy

log = logging.getLogger("locksmithd.observe")
GROUP_READ_MIN_INTERVAL_S = 5.0
"""Scrapes closer together reuse the last read (the head of the queue and the holders: full figures)."""

GROUP_PROBE_MIN_INTERVAL_S = 60.0
"""Every other daemon exports the figures of its once-a-minute look (``daemon/group_watch.py``: the semaphore
and halt, the alive keys only while a holder is past its deadline), without the waiters, and reads the group
itself only when no look came for a minute (a queued host does not look): etcd is shared by the fleet, and
10,000 hosts reading the whole queue at every scrape would cost it O(N^2)."""


class Observers:
    """Fans the daemon's events out to the metrics (and whatever else observes it).

    ``event`` is the Daemon's ``on_event`` hook; listeners (the journal's)
    hear every event too. With no metrics address no metric is kept and
    ``start`` does nothing.
    """

    def __init__(self, settings: DaemonSettings, strategy: RebootStrategy) -> None:
        self.settings = settings
        self.strategy = strategy
        self.metrics: DaemonMetrics | None = None
        self._server: asyncio.AbstractServer | None = None
        self._last_read_at: float | None = None
        self._last_read_involved = False
        self._listeners: list[Callable[[str, str], None]] = []
        if settings.metrics_address is not None:
            self._make_metrics()

    def _make_metrics(self) -> None:
        from locksmithd.observe.metrics import DaemonMetrics

        self.metrics = DaemonMetrics(self.settings.group, position=self.strategy.queue_position,
                                     handoffs=self.strategy.handoffs_observed)
        self.strategy.observe_requests(self.metrics.etcd_request)

    def add_listener(self, listener: Callable[[str, str], None]) -> None:
        self._listeners.append(listener)

    def event(self, kind: str, detail: str) -> None:
        """The Daemon's on_event: count it; never raises (a broken observer must not stop a reboot)."""
        try:
            if self.metrics is not None:
                if kind == "state":
                    self.metrics.state_changed(State(detail))
                else:
                    self.metrics.event(kind, detail)
            for listener in self._listeners:
                listener(kind, detail)
        except Exception:  # observing is best effort
            log.debug("observer failed on %s", kind, exc_info=True)

    async def start(self) -> None:
        """Listen on the metrics address (ConfigError if it cannot be bound)."""
        if self.metrics is None or self.settings.metrics_address is None:
            return
        from locksmithd.observe.server import start_metrics_server

        self._server = await start_metrics_server(self.settings.metrics_address, self._render)
        log.info("serving metrics on %s", self.settings.metrics_address)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _render(self) -> bytes:
        assert self.metrics is not None
        loop = asyncio.get_running_loop()
        involved = self._involved()
        interval = GROUP_READ_MIN_INTERVAL_S if involved else GROUP_PROBE_MIN_INTERVAL_S
        if self.strategy.group_client() is not None and (
                self._last_read_at is None or involved != self._last_read_involved
                or loop.time() - self._last_read_at >= interval):
            self._last_read_at, self._last_read_involved = loop.time(), involved
            self.metrics.group_read(await asyncio.to_thread(self._read_group, involved))
        return self.metrics.exposition()

    def group_seen(self, figures: GroupFigures | None) -> None:
        """A look of the group watch: exported (and no read of its own for a minute) unless involved."""
        if self.metrics is None or self._involved():
            return
        self._last_read_at, self._last_read_involved = asyncio.get_running_loop().time(), False
        self.metrics.group_read(figures)

    def _involved(self) -> bool:
        """True while this host holds a slot or heads the queue: then it exports all the group's figures.

        At most ``max`` + 1 hosts of a group do, so the figures that read the
        whole queue (``waiters``) cost etcd O(N) per scrape interval, not O(N^2),
        and the figures a group's hosts export are never older than 5 s.
        """
        from locksmithd.observe.metrics import HOLDS_SLOT

        assert self.metrics is not None
        state = self.metrics.state
        if state in HOLDS_SLOT:
            return True
        place = self.strategy.queue_position() if state is State.WAITING_FOR_LOCK else None
        return place is not None and place[0] == 1

    def _group_client(self) -> SemaphoreClient:
        client = self.strategy.group_client()
        assert client is not None  # _render reads only through a strategy that has one
        return client

    def _read_group(self, waiters: bool) -> GroupFigures | None:
        from locksmithd.observe.group import read_group_figures

        try:
            return read_group_figures(self._group_client(), self.settings.group, self.settings.etcd.key_prefix,
                                      datetime.now(timezone.utc), waiters=waiters)
        except StoreError as error:
            log.debug("metrics: cannot read the group: %s", error.one_line())
            return None
