"""One benchmark worker process: many simulated hosts waiting in one GroupQueue on one event loop.

Run by bench/queue_bench.py as ``python bench/queue_worker.py '<json spec>'``.
Every waiter uses the package's real waiting code (GroupQueue.acquire) and
releases through the one CAS path (SemaphoreClient.unlock). All waiters of
the process share one EtcdStore, one lease and one group watch, as the
hosts of a real fleet would share nothing but etcd. When all have been served
the worker prints one JSON line of wall-clock timestamps, then waits for a
line on stdin before revoking its lease (so set-up and tear-down traffic
stay out of the coordinator's measurement window).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from locksmithd.etcd.connection import EtcdSettings, parse_endpoints  # noqa: E402
from locksmithd.etcd.client import EtcdStore  # noqa: E402
from locksmithd.etcd.lock import SemaphoreClient  # noqa: E402
from locksmithd.etcd.queue import GroupQueue, LeaseSession  # noqa: E402
from bench.counting import CountingStore  # noqa: E402


async def serve(spec: dict[str, Any]) -> None:
    settings = EtcdSettings(endpoints=parse_endpoints(spec["endpoint"], "bench", "endpoint"),
                            key_prefix=spec["key_prefix"], request_timeout_s=10.0)
    store = EtcdStore(settings)
    queue = GroupQueue(store, spec["group"], spec["key_prefix"], session=LeaseSession(store, spec["lease_ttl_s"]),
                       retry_max_s=30.0)
    release_store = CountingStore(store)
    client = SemaphoreClient(release_store, spec["group"], spec["key_prefix"])
    hold_s = spec["hold_s"]
    records: dict[str, dict[str, float]] = {}

    async def host(holder: str) -> None:
        if not await queue.acquire(holder):
            raise RuntimeError(f"{holder} was not served")
        acquired = time.time()
        if hold_s:
            await asyncio.sleep(hold_s)
        await asyncio.to_thread(client.unlock, holder)
        records[holder] = {"acquired": acquired, "released": time.time()}

    started = time.time()
    await asyncio.gather(*(host(h) for h in spec["holders"]))
    print(json.dumps({"started": started, "records": records, "release_requests": release_store.calls}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await queue.close()
    store.close()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="queue_worker[%(process)d]: %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
