"""`locksmithctl status` against a 10,000-host queue: median wall time of a fresh process (summary, --json).

Run: .venv/bin/python bench/status_scale.py [N]. Starts its own etcd, puts N
waiter keys on one lease (batched transactions), then times five runs each.
"""

from __future__ import annotations

import compileall
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.etcd import EtcdCluster  # noqa: E402
from locksmithd.etcd.client import EtcdStore  # noqa: E402
from locksmithd.etcd.keys import waiter_key  # noqa: E402
from locksmithd.etcd.lock import SemaphoreClient  # noqa: E402
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints  # noqa: E402

CTL = str(Path(sys.executable).parent / "locksmithctl")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    # As installed (pip and distribution packages byte-compile at install time): an editable
    # install run with PYTHONDONTWRITEBYTECODE would compile locksmithd's modules at every run.
    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "locksmithd"), quiet=1)
    with EtcdCluster.start(1, log_dir=Path(tempfile.mkdtemp(prefix="status-bench-"))) as cluster:
        url = cluster.client_urls[0]
        store = EtcdStore(EtcdSettings(request_timeout_s=5.0, endpoints=parse_endpoints(url, "bench", "endpoint")))
        client = SemaphoreClient(store)
        client.reset(1, client.read_raw())
        client.lock("seed")
        lease = store.grant_lease(600)
        since = json.dumps({"since": "2026-12-01T12:00:00.000+00:00"}).encode()

        def put_batch(c: object, keys: list[str]) -> None:
            tx = c.transactions  # type: ignore[attr-defined]
            c.transaction(compare=[], success=[tx.put(k, since, lease=lease) for k in keys], failure=[])  # type: ignore[attr-defined]

        holders = [f"host-{i:05d}" for i in range(n)]
        for start in range(0, n, 100):
            batch = [waiter_key(h) for h in holders[start:start + 100]]
            store._call("put batch", functools.partial(put_batch, keys=batch))
        for args in ([], ["--json"], ["--waiters"]):
            times = []
            for _ in range(5):
                began = time.perf_counter()
                subprocess.run([CTL, "--endpoint", url, "status", *args], capture_output=True, check=True)
                times.append((time.perf_counter() - began) * 1000)
            print(f"status {' '.join(args) or '(summary)'} with {n} waiters: median {statistics.median(times):.0f} ms "
                  f"(min {min(times):.0f}, max {max(times):.0f})", flush=True)
        store.close()


if __name__ == "__main__":
    main()
