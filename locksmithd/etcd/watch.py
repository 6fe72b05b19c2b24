"""One etcd watch stream on a key range, run in a background thread, fed to callbacks."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from etcd3 import etcdrpc

from locksmithd.errors import StoreError, StoreUnavailable
from locksmithd.etcd.store import StoredKey

OpenStream = Callable[[Callable[[Any], Any]], Any]
"""Runs ``start(client)`` on the first endpoint that accepts it and returns its result."""


@dataclass(frozen=True)
class WatchEvent:
    """A change seen by a watch: ``kind`` is "put" or "delete"."""

    kind: str
    entry: StoredKey


class RangeWatch:
    """A watch on keys in [start_key, end_key) from ``start_revision``; see EtcdStore.watch_range.

    python3-etcd3 has a watcher of its own, but its 0.13 release references
    ``six`` without importing it, so a broken stream dies silently there. This
    one runs the gRPC Watch stream itself and reports every break once.
    """

    def __init__(self, open_stream: OpenStream, start_key: str, end_key: str, start_revision: int,
                 on_events: Callable[[list[WatchEvent], int], None],
                 on_broken: Callable[[BaseException], None]) -> None:
        self._open_stream = open_stream
        self._request = etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
            key=start_key.encode(), range_end=end_key.encode(), start_revision=start_revision,
            progress_notify=True))
        self._on_events = on_events
        self._on_broken = on_broken
        self._stream: Any = None
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch {start_key}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        """Stop the watch; ``on_broken`` is not called for a cancelled watch."""
        self._cancelled.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()

    def _run(self) -> None:
        try:
            self._stream = self._open_stream(self._start_on)
            if self._cancelled.is_set():
                self._stream.cancel()
            for response in self._stream:
                if response.compact_revision:
                    raise StoreError(f"watch fell behind compaction at revision {response.compact_revision}")
                if response.canceled:
                    raise StoreUnavailable(f"etcd cancelled the watch: {response.cancel_reason or 'no reason'}")
                events = [WatchEvent("delete" if ev.type == 1 else "put", StoredKey.from_kv(ev.kv))
                          for ev in response.events]
                self._on_events(events, response.header.revision)
            raise StoreUnavailable("watch stream ended")
        except BaseException as exc:  # reported to the owner, who restarts the watch
            if not self._cancelled.is_set():
                self._on_broken(exc)

    def _requests(self) -> Iterator[Any]:
        # Keep the sending side open until cancelled: a half-closed stream may end.
        yield self._request
        self._cancelled.wait()

    def _start_on(self, client: Any) -> Any:
        stub = etcdrpc.WatchStub(client.channel)
        # "hasleader" makes etcd end the stream when its member loses the leader,
        # so a partitioned member cannot leave us watching a frozen view.
        metadata = tuple(client.metadata or ()) + (("hasleader", "true"),)
        return stub.Watch(self._requests(), credentials=client.call_credentials, metadata=metadata)
