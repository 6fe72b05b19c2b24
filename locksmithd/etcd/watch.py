"""etcd watches multiplexed on one gRPC Watch stream per store: one thread, any number of watches."""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from etcd3 import etcdrpc

from locksmithd.errors import StoreError, StoreUnavailable
from locksmithd.etcd.store import StoredKey

log = logging.getLogger("locksmithd.etcd")

OpenStream = Callable[[Callable[[Any], Any]], Any]
"""Runs ``start(client)`` on the first endpoint that accepts it and returns its result."""


@dataclass(frozen=True)
class WatchEvent:
    """A change seen by a watch: ``kind`` is "put" or "delete"."""

    kind: str
    entry: StoredKey


class RangeWatch:
    """A watch on keys in [start_key, end_key) from ``start_revision``; see EtcdStore.watch_range.

    A handle on one watch of a shared ``WatchStream``: ``on_events`` and
    ``on_broken`` run on the stream's thread; ``on_broken`` runs at most once
    and never after ``cancel``.
    """

    def __init__(self, stream: WatchStream, start_key: str, end_key: str, start_revision: int,
                 on_events: Callable[[list[WatchEvent], int], None],
                 on_broken: Callable[[BaseException], None], *, deletes_only: bool = False,
                 on_created: Callable[[int], None] | None = None) -> None:
        self._hub = stream
        self.request = etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
            key=start_key.encode("utf-8", errors="surrogateescape"),
            range_end=end_key.encode("utf-8", errors="surrogateescape"), start_revision=start_revision,
            filters=[etcdrpc.WatchCreateRequest.NOPUT] if deletes_only else []))
        self.on_events = on_events
        self.on_created = on_created  # called with the revision etcd set the watch up at
        self._on_broken = on_broken
        self.watch_id: int | None = None
        self.done = False  # cancelled or broken: nothing more is delivered

    def start(self) -> None:
        self._hub.add(self)

    def cancel(self) -> None:
        """Stop the watch; ``on_broken`` is not called for a cancelled watch."""
        self._hub.remove(self)

    def broken(self, error: BaseException) -> None:
        if not self.done:
            self.done = True
            self._on_broken(error)


class WatchStream:
    """Every watch of one store on one bidirectional Watch stream, read by one thread.

    etcd answers create requests on a stream in the order they were sent,
    each with a new watch id; events then carry that id. When the stream
    breaks (endpoint down, leader lost: "hasleader" makes etcd end it), every
    watch on it is reported broken once and the next watch opens a new stream.
    python3-etcd3's watcher is not used: its 0.13 release references ``six``
    without importing it, so a broken stream dies silently there.
    """

    def __init__(self, open_stream: OpenStream) -> None:
        self._open_stream = open_stream
        self._lock = threading.Lock()
        self._outbox: queue.SimpleQueue[Any] | None = None  # requests of the current stream; None: no stream
        self._pending: deque[RangeWatch] = deque()  # sent create requests awaiting their watch id
        self._active: dict[int, RangeWatch] = {}
        self._generation = 0

    @property
    def watch_count(self) -> int:
        with self._lock:
            return len(self._active) + len(self._pending)

    def add(self, watch: RangeWatch) -> None:
        with self._lock:
            if self._outbox is None:
                self._outbox = queue.SimpleQueue()
                self._generation += 1
                threading.Thread(target=self._run, args=(self._outbox, self._generation),
                                 name="etcd watch stream", daemon=True).start()
            self._pending.append(watch)
            self._outbox.put(watch.request)

    def remove(self, watch: RangeWatch) -> None:
        with self._lock:
            watch.done = True
            if watch.watch_id is not None and self._active.pop(watch.watch_id, None) is not None and self._outbox:
                self._outbox.put(etcdrpc.WatchRequest(cancel_request=etcdrpc.WatchCancelRequest(
                    watch_id=watch.watch_id)))
            # a watch still pending is cancelled when its id arrives (see _created)

    def close(self) -> None:
        """End the stream; its watches are not reported broken."""
        with self._lock:
            watches = [*self._pending, *self._active.values()]
            for watch in watches:
                watch.done = True
            self._pending.clear()
            self._active.clear()
            if self._outbox is not None:
                self._outbox.put(None)
                self._outbox = None

    def _run(self, outbox: queue.SimpleQueue[Any], generation: int) -> None:
        stream: Any = None
        try:
            stream = self._open_stream(lambda client: self._start_on(client, outbox))
            for response in stream:
                self._dispatch(response, outbox)
            raise StoreUnavailable("watch stream ended")
        except BaseException as exc:  # every watch on the stream is told; owners re-read and watch again
            if stream is not None:
                stream.cancel()
            self._broken(exc, generation)

    def _dispatch(self, response: Any, outbox: queue.SimpleQueue[Any]) -> None:
        if response.created:
            watch = self._created(response, outbox)
            if watch is None:
                return
            if watch.on_created is not None and not response.canceled:
                watch.on_created(int(response.header.revision))
        else:
            with self._lock:
                watch = self._active.get(response.watch_id)
            if watch is None or watch.done:
                return
        if response.compact_revision:
            self._end(watch, StoreError(f"watch fell behind compaction at revision {response.compact_revision}"))
        elif response.canceled:
            self._end(watch, StoreUnavailable(f"etcd cancelled the watch: {response.cancel_reason or 'no reason'}"))
        elif response.events:
            events = [WatchEvent("delete" if ev.type == 1 else "put", StoredKey.from_kv(ev.kv))
                      for ev in response.events]
            watch.on_events(events, response.header.revision)

    def _created(self, response: Any, outbox: queue.SimpleQueue[Any]) -> RangeWatch | None:
        """Pair a "created" reply with the oldest create request; cancel it if its watch went meanwhile."""
        with self._lock:
            if not self._pending:
                return None
            watch = self._pending.popleft()
            watch.watch_id = response.watch_id
            if watch.done:
                if not response.canceled:
                    outbox.put(etcdrpc.WatchRequest(cancel_request=etcdrpc.WatchCancelRequest(
                        watch_id=response.watch_id)))
                return None
            if not response.canceled and response.watch_id >= 0:
                self._active[response.watch_id] = watch
        return watch

    def _end(self, watch: RangeWatch, error: BaseException) -> None:
        with self._lock:
            if watch.watch_id is not None:
                self._active.pop(watch.watch_id, None)
        watch.broken(error)

    def _broken(self, error: BaseException, generation: int) -> None:
        with self._lock:
            if generation != self._generation or self._outbox is None:
                return
            watches = [*self._pending, *self._active.values()]
            self._pending.clear()
            self._active.clear()
            self._outbox.put(None)
            self._outbox = None
        for watch in watches:
            watch.broken(error)

    @staticmethod
    def _requests(outbox: queue.SimpleQueue[Any]) -> Iterator[Any]:
        # Keep the sending side open until closed: a half-closed stream may end.
        while (request := outbox.get()) is not None:
            yield request

    def _start_on(self, client: Any, outbox: queue.SimpleQueue[Any]) -> Any:
        stub = etcdrpc.WatchStub(client.channel)
        # "hasleader" makes etcd end the stream when its member loses the leader,
        # so a partitioned member cannot leave us watching a frozen view.
        metadata = tuple(client.metadata or ()) + (("hasleader", "true"),)
        return stub.Watch(self._requests(outbox), credentials=client.call_credentials, metadata=metadata)
