"""`make bench-scale`: the queue at N = 100, 1,000 and 10,000 hosts, each with its own lease and watches.

For each N a fresh etcd starts (3 members for the leader-restart run);
worker processes (``scale_worker.py``) host the simulated hosts: one
GroupQueue and one tiered LeaseSession per host, one EtcdStore (connection
and multiplexed watch stream) per worker. One slot (max 1) is held by a seed;
once all N waiter keys exist the run waits a minute, then counts etcd's
received gRPC messages for an idle window (requests per waiting host per
minute), optionally restarts the leader and counts the recovery, then frees
the seed and lets ``--sample`` hosts through (each releases at once),
counting events sent (``etcd_debugging_mvcc_events_total``) and messages
received per acquisition. Prints one table and writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.etcd import EtcdCluster, EtcdMember  # noqa: E402
from harness.fleet import SemaphoreMonitor  # noqa: E402
from locksmithd.etcd.client import EtcdStore  # noqa: E402
from locksmithd.etcd.keys import halt_key, waiter_holder, waiters_prefix  # noqa: E402
from locksmithd.etcd.lock import SemaphoreClient  # noqa: E402
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints  # noqa: E402

WORKER = Path(__file__).resolve().parent / "scale_worker.py"
RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"


def messages_received(members: list[EtcdMember]) -> float:
    """Every gRPC message etcd received (a unary call is one; each keep-alive or watch request on a stream one)."""
    return sum(value for member in members for key, value in member.metrics().items()
               if key.startswith("grpc_server_msg_received_total"))


def events_sent(members: list[EtcdMember]) -> float:
    return sum(member.metrics().get("etcd_debugging_mvcc_events_total", 0.0) for member in members)


def fsync_buckets(members: list[EtcdMember]) -> dict[float, float]:
    """etcd's WAL fsync histogram (cumulative counts by upper bound, all members summed)."""
    buckets: dict[float, float] = {}
    for member in members:
        for key, value in member.metrics().items():
            if key.startswith("etcd_disk_wal_fsync_duration_seconds_bucket{"):
                bound = key.split('le="', 1)[1].split('"', 1)[0]
                upper = float("inf") if bound == "+Inf" else float(bound)
                buckets[upper] = buckets.get(upper, 0.0) + value
    return buckets


def fsync_quantile_ms(before: dict[float, float], after: dict[float, float], quantile: float) -> float | None:
    """The bucket bound (ms) below which ``quantile`` of the fsyncs between the two scrapes fell."""
    deltas = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = deltas[-1][1] if deltas else 0.0
    for bound, count in deltas:
        if total and count >= quantile * total:
            return bound * 1000
    return None


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Workers:
    """The worker processes; a thread per worker files its report lines (served hosts, counts)."""

    def __init__(self, endpoints: list[str], holders: list[str], count: int) -> None:
        self.procs = [subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps({"endpoints": endpoints, "holders": holders[w::count]})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1) for w in range(count)]
        self.served: list[dict[str, Any]] = []
        self._counts: queue.Queue[dict[str, Any]] = queue.Queue()
        for proc in self.procs:
            threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            report = json.loads(line)
            if "served" in report:
                self.served.append(report)
            elif "reads" in report:
                self._counts.put(report)

    def counts(self) -> tuple[int, int, int]:
        """(reads, keys, queue scans) of the queue's reads, summed over the workers."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("counts\n")
        replies = [self._counts.get(timeout=60) for _ in self.procs]
        return (sum(r["reads"] for r in replies), sum(r["keys"] for r in replies),
                sum(r["scans"] for r in replies))

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def wait_queued(store: EtcdStore, n: int, timeout_s: float) -> float:
    start = time.monotonic()
    while store.count_prefix(waiters_prefix())[0] < n:
        if time.monotonic() - start > timeout_s:
            raise RuntimeError(f"only {store.count_prefix(waiters_prefix())[0]} of {n} hosts queued")
        time.sleep(0.5)
    return time.monotonic() - start


def run(n: int, members: int, sample: int, settle_s: float, idle_s: float, restart_leader: bool) -> dict[str, Any]:
    workers_count = max(2, min(4, n // 250))
    with EtcdCluster.start(members, log_dir=Path(tempfile.mkdtemp(prefix="scale-bench-"))) as cluster:
        nodes = cluster.members
        endpoints = cluster.client_urls
        store = EtcdStore(EtcdSettings(endpoints=parse_endpoints(",".join(endpoints), "bench", "endpoint"),
                                       request_timeout_s=10.0))
        client = SemaphoreClient(store)
        client.reset(1, client.read_raw())
        client.lock("seed")
        monitor = SemaphoreMonitor(endpoints)
        monitor.start()
        cpu0 = {m.name: cpu_s(m.pid) for m in nodes if m.pid}
        holders = [f"host-{i:05d}" for i in range(n)]
        if restart_leader:  # hosts talk to the leader first, so that restarting it breaks their watches
            leader_url = cluster.leader().client_url
            endpoints = [leader_url, *(url for url in endpoints if url != leader_url)]
        workers = Workers(endpoints, holders, workers_count)
        result: dict[str, Any] = {"n": n, "members": members, "workers": workers_count}
        try:
            result["enqueue_s"] = wait_queued(store, n, 600)
            result["enqueue_scans_per_host"] = workers.counts()[2] / n
            time.sleep(settle_s)
            before = messages_received(nodes)
            time.sleep(idle_s)
            result["idle_req_per_host_min"] = (messages_received(nodes) - before) / n / (idle_s / 60)
            if restart_leader:
                result.update(recover(cluster, store, workers, n))
            prefix = waiters_prefix()
            arrival = [h for e in store.read_prefix(prefix) if (h := waiter_holder(e.key))]
            scans0 = workers.counts()[2]
            events0, requests0, seen0 = events_sent(nodes), messages_received(nodes), monitor.changes
            fsync0 = fsync_buckets(nodes)
            freed = time.time()
            client.unlock("seed")
            want = min(sample, n)
            deadline = time.monotonic() + 600
            while len(workers.served) < want and time.monotonic() < deadline:
                time.sleep(0.005)
            events1, requests1, seen1 = events_sent(nodes), messages_received(nodes), monitor.changes
            result["scans_per_acq"] = (workers.counts()[2] - scans0) / want
            fsync1 = fsync_buckets(nodes)  # the floor under each handoff: the acquirer's write is fsynced
            result["wal_fsync_p50_ms"] = fsync_quantile_ms(fsync0, fsync1, 0.5)
            result["wal_fsync_p99_ms"] = fsync_quantile_ms(fsync0, fsync1, 0.99)
            store.put(halt_key(), b"bench: done")  # stops further handoffs (a corrupt halt halts too)
            served = sorted(list(workers.served), key=lambda r: r["acquired"])[:want]
            result.update(handoffs(served, arrival, freed))
            # less the bench's own safety monitor's events (one per semaphore version it saw)
            result["events_per_acq"] = (events1 - events0 - (seen1 - seen0)) / want
            result["requests_per_acq"] = (requests1 - requests0) / want
            result["max_holders_seen"] = monitor.max_holders_seen
            result["violations"] = len(monitor.violations)
            result["etcd_rss_mib"] = sum(rss_mib(m.pid) for m in nodes if m.pid)
            result["etcd_cpu_s"] = sum(cpu_s(m.pid) - cpu0.get(m.name, 0.0) for m in nodes if m.pid)
        finally:
            workers.stop()
            monitor.stop()
            store.close()
    return result


def recover(cluster: EtcdCluster, store: EtcdStore, workers: Workers, n: int) -> dict[str, Any]:
    """Restart the leader; count what the hosts send and read until the queue is quiet again."""
    leader = cluster.leader()  # the member the hosts talk to (see run), unless leadership moved since
    # The restarted member's counters start again from zero: count only the members that stayed up.
    stayed = [m for m in cluster.members if m is not leader]
    reads0, keys0, scans0 = workers.counts()
    before = messages_received(stayed)
    leader.restart()
    cluster.wait_healthy()
    time.sleep(20)  # broken watches re-read after up to 5 s of jitter; give the herd that never comes time
    after = messages_received(stayed)
    reads1, keys1, scans1 = workers.counts()
    return {"recovery_reads_per_host": (reads1 - reads0) / n, "recovery_keys_per_host": (keys1 - keys0) / n,
            "recovery_scans_per_host": (scans1 - scans0) / n,
            "recovery_note": f"leader {leader.name} restarted; requests counted on the {len(stayed)} others",
            "recovery_requests_per_host": max(0.0, after - before) / n}


def handoffs(served: list[dict[str, Any]], arrival: list[str], freed: float) -> dict[str, Any]:
    gaps = [served[0]["acquired"] - freed] + [b["acquired"] - a["released"] for a, b in zip(served, served[1:])]
    waiting = list(arrival)
    overtakes = 0
    for record in served:
        if waiting and waiting[0] != record["served"]:
            overtakes += 1
        if record["served"] in waiting:
            waiting.remove(record["served"])
    ms = sorted(g * 1000 for g in gaps)
    return {"served": len(served), "gap_p50_ms": statistics.median(ms),
            "gap_p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))], "gap_max_ms": ms[-1], "overtakes": overtakes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--sample", type=int, default=200, help="handoffs measured per N")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds after all queued before the idle window")
    parser.add_argument("--idle", type=float, default=60.0, help="idle window in seconds")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} (shared with other jobs)", flush=True)
    results = []
    for n in (int(x) for x in args.sizes.split(",")):
        results.append(run(n, 1, args.sample, args.settle, args.idle, False))
        print(json.dumps(results[-1]), flush=True)
        if n == 1000:
            results.append(run(n, 3, args.sample, args.settle, args.idle, True))
            print(json.dumps(results[-1]), flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    cols = ["n", "members", "events_per_acq", "requests_per_acq", "idle_req_per_host_min", "gap_p50_ms",
            "gap_p99_ms", "gap_max_ms", "overtakes", "max_holders_seen", "etcd_rss_mib", "etcd_cpu_s",
            "recovery_requests_per_host", "recovery_reads_per_host", "recovery_keys_per_host",
            "recovery_scans_per_host", "enqueue_s", "enqueue_scans_per_host", "scans_per_acq", "wal_fsync_p50_ms",
            "wal_fsync_p99_ms"]
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(f"{r[c]:.3g}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in cols))


if __name__ == "__main__":
    main()
