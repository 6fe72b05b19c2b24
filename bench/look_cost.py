"""What a fleet's once-a-minute looks at its group cost etcd: N hosts' looks, spread over a minute, for 60 s.

Run: .venv/bin/python bench/look_cost.py [N]. Starts its own etcd, writes a
document with 5 holders and their records (max 5), then makes N looks
(``read_group_figures`` without waiters, as ``daemon/group_watch.py`` does)
evenly over 60 s from 4 threads, and prints etcd's CPU seconds and the
looks' latency.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.etcd import EtcdCluster  # noqa: E402
from locksmithd.core.holder_record import new_record  # noqa: E402
from locksmithd.etcd.client import EtcdStore  # noqa: E402
from locksmithd.etcd.lock import SemaphoreClient  # noqa: E402
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints  # noqa: E402
from locksmithd.observe.group import read_group_figures  # noqa: E402

SECONDS = 60.0
THREADS = 4


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    hosts = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    cluster = EtcdCluster.start(1)
    try:
        pid = cluster.members[0].pid
        assert pid is not None
        store = EtcdStore(EtcdSettings(
            request_timeout_s=5.0, endpoints=parse_endpoints(cluster.client_urls, "bench", "endpoint")))
        client = SemaphoreClient(store, "", "")
        client.set_max(5)
        now = datetime.now(timezone.utc)
        for i in range(5):
            record = new_record(now=now, deadline_after=timedelta(hours=1), hostname=f"host-{i}.example.com",
                                source="locksmithd", boot_id="b" * 32, reason="update-engine: version 1.2.3")
            client.lock(f"{i:032x}", record.to_info())
        raw = client.read_raw()
        size = len(raw.value) if raw is not None else 0
        latencies: list[float] = []
        start = time.monotonic()

        def worker(k: int) -> None:
            interval = SECONDS * THREADS / hosts
            next_at = start + k * interval / THREADS
            while next_at < start + SECONDS:
                time.sleep(max(next_at - time.monotonic(), 0))
                began = time.monotonic()
                read_group_figures(client, "", "", datetime.now(timezone.utc), waiters=False)
                latencies.append(time.monotonic() - began)
                next_at += interval

        before = cpu_s(pid)
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - start
        used = cpu_s(pid) - before
        latencies.sort()
        print(f"{hosts} hosts: document {size} bytes; {len(latencies)} looks in {wall:.1f} s; etcd CPU {used:.2f} s "
              f"({100 * used / wall:.1f}% of a core); look p50 {1000 * latencies[len(latencies) // 2]:.1f} ms, "
              f"p99 {1000 * latencies[int(len(latencies) * 0.99)]:.1f} ms")
        store.close()
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
