"""The FleetLock server at fleet scale: cost of one refused poll with K clients queued, K = 100 .. 100,000.

Run: .venv/bin/python bench/fleetlock_bench.py [--sizes 100,1000,10000,100000]. For each K: a fresh
single-member etcd and a fresh ``locksmithd-fleetlock`` process (its own process, so the load
generator does not share its event loop); max 1 with the slot held by a seed host, so every poll is
refused. K clients are queued through the server's own HTTP path (``pre-reboot``, CONNECTIONS at
once). Then POLLS polls from clients drawn at random from the K, one at a time, are timed, with
etcd's /metrics scraped before and after: gRPC requests (``grpc_server_started_total``), bytes etcd
sent (``etcd_network_client_grpc_sent_bytes_total``), writes (raft proposals committed: puts,
deletes, lease grants and revokes; keep-alives are not proposals, so they are counted apart, as
``LeaseKeepAlive`` requests). Last, CYCLES clients of another group take and release a slot
(pre-reboot granted, steady-state) and the leases left are counted: all of etcd's leases minus those
of the K queued clients' keys (one each) should be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.etcd import EtcdCluster, EtcdMember  # noqa: E402
from harness.leases import lease_ids  # noqa: E402
from harness.ports import free_port  # noqa: E402
from locksmithd.etcd.client import EtcdStore  # noqa: E402
from locksmithd.etcd.keys import waiters_prefix  # noqa: E402
from locksmithd.etcd.lock import SemaphoreClient  # noqa: E402
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints  # noqa: E402

SERVER = str(Path(sys.executable).parent / "locksmithd-fleetlock")
HEADERS = {"fleet-lock-protocol": "true"}
CONNECTIONS = 48
POLLS = 1000
CYCLES = 20
GRACE = "1h"
"""Longer than the queueing of 100,000 clients, so that the timed polls measure the poll, not keep-alives
(which each cost a lease TTL read and a keep-alive per client per grace/3; reported apart all the same)."""
RESULTS = Path(__file__).resolve().parent / "results" / "fleetlock.json"


def body(client_id: str, group: str = "default") -> bytes:
    return json.dumps({"client_params": {"id": client_id, "group": group}}).encode()


async def post(session: aiohttp.ClientSession, url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    async with session.post(url, data=data, headers=HEADERS) as response:
        raw = await response.read()
        return response.status, json.loads(raw) if raw else {}


async def queue_clients(base: str, ids: list[str]) -> float:
    """Queue every id with one refused pre-reboot, CONNECTIONS at once; returns the seconds taken."""
    began = time.perf_counter()
    pending = iter(ids)
    connector = aiohttp.TCPConnector(limit=CONNECTIONS, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            for client_id in pending:
                for _ in range(20):
                    status, answer = await post(session, f"{base}/v1/pre-reboot", body(client_id))
                    if status == 409:
                        break
                    await asyncio.sleep(0.05)  # 503 busy: ask again
                else:
                    raise RuntimeError(f"{client_id} not queued: {status} {answer}")

        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return time.perf_counter() - began


async def timed_polls(base: str, ids: list[str], rng: random.Random) -> tuple[list[float], list[str]]:
    """POLLS refused polls by random queued clients, one at a time: latencies (ms) and a few answers."""
    latencies, answers = [], []
    connector = aiohttp.TCPConnector(limit=1, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for n in range(POLLS):
            data = body(rng.choice(ids))
            began = time.perf_counter()
            status, answer = await post(session, f"{base}/v1/pre-reboot", data)
            latencies.append((time.perf_counter() - began) * 1000)
            if status != 409:
                raise RuntimeError(f"poll answered {status} {answer}")
            if n < 3:
                answers.append(answer.get("value", ""))
    return latencies, answers


async def cycles(base: str) -> None:
    """CYCLES clients of group "cycles" each take a slot (granted at once) and release it."""
    connector = aiohttp.TCPConnector(limit=1, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for n in range(CYCLES):
            for path in ("pre-reboot", "steady-state"):
                status, answer = await post(session, f"{base}/v1/{path}", body(f"cycle-{n}", "cycles"))
                if status != 200:
                    raise RuntimeError(f"{path} of cycle-{n} answered {status} {answer}")


def counters(member: EtcdMember) -> dict[str, float]:
    metrics = member.metrics(timeout_s=10)
    requests = sum(value for key, value in metrics.items() if key.startswith("grpc_server_started_total"))
    keep_alives = sum(value for key, value in metrics.items()
                      if key.startswith("grpc_server_msg_received_total") and 'grpc_method="LeaseKeepAlive"' in key)
    return {"requests": requests, "keep_alives": keep_alives,
            "sent_bytes": metrics.get("etcd_network_client_grpc_sent_bytes_total", 0.0),
            "writes": metrics.get("etcd_server_proposals_committed_total", 0.0),
            "puts": metrics.get("etcd_mvcc_put_total", 0.0) + metrics.get("etcd_mvcc_delete_total", 0.0)}


def run_size(k: int, rng: random.Random) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="fleetlock-bench-"))
    with EtcdCluster.start(1, log_dir=log_dir) as cluster:
        url = cluster.client_urls[0]
        store = EtcdStore(EtcdSettings(request_timeout_s=5.0, endpoints=parse_endpoints(url, "bench", "endpoint")))
        sem = SemaphoreClient(store)
        sem.reset(1, sem.read_raw())
        sem.lock("seed-holder")
        port = free_port()
        with open(log_dir / "server.log", "wb") as server_log:
            server = subprocess.Popen([SERVER, "--listen", f"127.0.0.1:{port}", "--endpoint", url, "--grace", GRACE,
                                       "--max-connections", "1024"], stderr=server_log, stdout=server_log)
            try:
                base = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 30
                while True:
                    try:
                        asyncio.run(timed_health(base))
                        break
                    except (aiohttp.ClientError, OSError):
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
                ids = [f"client-{n:06d}" for n in range(k)]
                queue_s = asyncio.run(queue_clients(base, ids))
                waiting, _ = store.count_prefix(waiters_prefix())
                before = counters(cluster.members[0])
                latencies, answers = asyncio.run(timed_polls(base, ids, rng))
                after = counters(cluster.members[0])
                asyncio.run(cycles(base))
                leases = len(lease_ids(url))
            finally:
                server.terminate()
                server.wait(timeout=30)
        store.close()
    delta = {name: (after[name] - before[name]) / POLLS for name in before}
    quantiles = statistics.quantiles(latencies, n=100)
    return {"k": k, "queued": waiting, "queue_s": round(queue_s, 1), "p50_ms": round(statistics.median(latencies), 2),
            "p90_ms": round(quantiles[89], 2), "p99_ms": round(quantiles[98], 2),
            "requests_per_poll": round(delta["requests"], 3), "bytes_per_poll": round(delta["sent_bytes"]),
            "writes_per_poll": round(delta["writes"], 4), "puts_per_poll": round(delta["puts"], 4),
            "keep_alives_per_poll": round(delta["keep_alives"], 4),
            "leases_left_without_key": leases - waiting, "sample_answer": answers[0] if answers else ""}


async def timed_health(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/v1/health") as response:
            await response.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000,100000", help="comma-separated K values")
    args = parser.parse_args()
    rng = random.Random(21)
    load = os.getloadavg()
    print(f"FleetLock server, one refused poll with K clients queued ({POLLS} polls, one at a time; "
          f"load average at start {load[0]:.1f}, {os.cpu_count()} CPUs)", flush=True)
    print("| K | queued in | p50 | p90 | p99 | etcd requests/poll | etcd bytes sent/poll | writes/poll | "
          "keep-alives/poll | leases without a key |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for k in [int(size) for size in args.sizes.split(",")]:
        row = run_size(k, rng)
        rows.append(row)
        print(f"| {k:,} | {row['queue_s']} s | {row['p50_ms']} ms | {row['p90_ms']} ms | {row['p99_ms']} ms | "
              f"{row['requests_per_poll']} | {row['bytes_per_poll']} B | {row['writes_per_poll']} | "
              f"{row['keep_alives_per_poll']} | {row['leases_left_without_key']} |", flush=True)
    print(f"sample answer: {rows[-1]['sample_answer']}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
