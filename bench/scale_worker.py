"""One scale-benchmark worker: many simulated hosts, each with its own GroupQueue, lease and watches.

Run by bench/scale_bench.py as ``python bench/scale_worker.py '<json spec>'``.
The hosts of a worker share one EtcdStore (one gRPC connection, one watch
stream carrying all their watches) and nothing else: each has its own
LeaseSession (tiered, as the daemon's) and its own GroupQueue. Every host
queues at once, takes its slot when the package's queue code says so,
releases at once through the one CAS path, and reports. Commands on stdin:
"stop" revokes the leases and exits. Reports are JSON lines on stdout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from locksmithd.etcd.client import EtcdStore  # noqa: E402
from locksmithd.etcd.lease import FAR_TTL_S, LeaseSession  # noqa: E402
from locksmithd.etcd.lock import SemaphoreClient  # noqa: E402
from locksmithd.etcd.queue import GroupQueue  # noqa: E402
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints  # noqa: E402
from locksmithd.etcd.store import Enqueued, Place, Snapshot, StoredKey  # noqa: E402
from locksmithd.settings.loader import DaemonSettings  # noqa: E402


class KeyCountingStore(EtcdStore):
    """Counts the queue's reads, the keys they read, and the reads that make etcd scan the queue."""

    reads = 0
    keys = 0
    scans = 0  # place reads bounded by create revision: etcd reads the whole waiter range for each

    def enqueue(self, *args: Any) -> Enqueued:
        result = super().enqueue(*args)
        KeyCountingStore.reads += 1
        # the tail's previous value (the key itself is written, not read), and the semaphore, halt and served with it
        KeyCountingStore.keys += 4 if result.group_read else 1
        return result

    def snapshot(self, keys: Sequence[str], semaphore_key: str = "", written_at: Sequence[int] = ()) -> Snapshot:
        found = super().snapshot(keys, semaphore_key, written_at)
        KeyCountingStore.reads += 1
        KeyCountingStore.keys += len(keys) + len(written_at)
        return found

    def locate(self, *args: Any) -> Place:
        place = super().locate(*args)
        KeyCountingStore.reads += 1
        KeyCountingStore.scans += 1
        KeyCountingStore.keys += 3 + len(place.before)  # own key, semaphore, halt (as read), keys ahead
        return place

    def predecessors(self, *args: Any) -> tuple[StoredKey, ...]:
        found = super().predecessors(*args)
        KeyCountingStore.reads += 1
        KeyCountingStore.scans += 1
        KeyCountingStore.keys += len(found)
        return found


DROP_OUT_S = math.ceil(DaemonSettings(machine_id="0" * 32).queue_drop_out_s)  # the shipped default, as a daemon


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def serve(spec: dict[str, Any]) -> None:
    endpoints = parse_endpoints(",".join(spec["endpoints"]), "bench", "endpoint")
    store = KeyCountingStore(EtcdSettings(endpoints=endpoints, request_timeout_s=10.0))
    releaser = SemaphoreClient(store)
    queues: list[GroupQueue] = []

    async def host(holder: str) -> None:
        queue = GroupQueue(store, retry_max_s=10.0, session=LeaseSession(store, DROP_OUT_S, FAR_TTL_S),
                           head_timeout_s=60.0)
        queues.append(queue)
        if not await queue.acquire(holder):
            return
        acquired = time.time()
        await asyncio.to_thread(releaser.unlock, holder)
        emit(served=holder, acquired=acquired, released=time.time())
        await queue.session.close()

    asyncio.get_running_loop().set_default_executor(
        __import__("concurrent.futures").futures.ThreadPoolExecutor(max_workers=16))
    tasks = [asyncio.create_task(host(h)) for h in spec["holders"]]
    emit(started=len(tasks))
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        command = line.strip()
        if command == "counts":
            emit(reads=KeyCountingStore.reads, keys=KeyCountingStore.keys, scans=KeyCountingStore.scans)
        elif command in ("stop", ""):
            break
    os._exit(0)  # the coordinator throws the etcd away: no need to leave the queue politely


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL, stream=sys.stderr,
                        format="scale_worker[%(process)d]: %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
