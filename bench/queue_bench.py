"""Handoff gap, etcd requests per acquisition and fairness of GroupQueue against a real etcd.

One run: all M slots start taken by "seed" holders; N waiters (spread over a
few worker processes) queue; once all N waiter keys exist the coordinator
releases the seeds one by one. Every waiter then gets a slot, holds it for
``hold_s`` and releases it through SemaphoreClient.unlock, so every
acquisition follows a release. A watch on the group (semaphore and waiter
keys) records the etcd history: the revision order of releases and
acquisitions (the k-th release pairs with the k-th acquisition), each
waiter's arrival (its key's create revision) and holders <= max at every
revision (harness.checker). Wall-clock times (time.time(), one host) are
taken right after ``unlock`` and ``acquire`` return, by whichever process
made the call.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locksmithd.etcd.connection import EtcdSettings, parse_endpoints
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.keys import prefix_end
from locksmithd.etcd.watch import WatchEvent
from locksmithd.etcd.keys import semaphore_key, waiter_holder, waiters_prefix
from locksmithd.etcd.lock import SemaphoreClient
from harness.checker import SafetyChecker
from harness.etcd import EtcdMember

from .counting import CountingStore
from .stats import Doc, max_overtakes, pair_handoffs, requests_by_method, slot_events, summary_ms

WORKER = Path(__file__).resolve().parent / "queue_worker.py"


class GroupRecorder:
    """Records a group's semaphore documents and waiter arrivals from one watch (a thread)."""

    def __init__(self, store: EtcdStore, group: str, key_prefix: str) -> None:
        self.store = store
        self.group = group
        self.key_prefix = key_prefix
        self.semaphore_key = semaphore_key(group, key_prefix)
        self.prefix = waiters_prefix(group, key_prefix)
        self.checker = SafetyChecker()
        self.arrivals: dict[str, int] = {}  # holder -> create revision of its first waiter key
        self.broken: list[str] = []
        self._lock = threading.Lock()
        self._watch: Any = None

    def start(self) -> None:
        stored = self.store.read(self.semaphore_key)
        if stored is None:
            raise RuntimeError(f"{self.semaphore_key} must exist before recording")
        self.checker.feed(stored.mod_revision, stored.value)
        self._watch = self.store.watch_range(self.semaphore_key, prefix_end(self.prefix), stored.mod_revision + 1,
                                             self._on_events, self._on_broken)

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self.arrivals)

    @property
    def violations(self) -> list[str]:
        return self.checker.violations

    def snapshot(self) -> tuple[list[Doc], dict[str, int]]:
        """The readable semaphore versions seen (as Docs) and the waiters' arrivals."""
        docs = [Doc(seen.revision, seen.max, frozenset(seen.holders)) for seen in list(self.checker.history)]
        with self._lock:
            return docs, dict(self.arrivals)

    def _on_events(self, events: list[WatchEvent], revision: int) -> None:
        for event in events:
            entry = event.entry
            if entry.key == self.semaphore_key:
                self.checker.feed(entry.mod_revision, entry.value if event.kind == "put" else None)
            elif entry.key.startswith(self.prefix) and event.kind == "put":
                holder = waiter_holder(entry.key, self.group, self.key_prefix)
                if holder is None:
                    continue
                with self._lock:
                    self.arrivals.setdefault(holder, entry.create_revision)

    def _on_broken(self, error: BaseException) -> None:
        self.broken.append(repr(error))


@dataclass
class QueueRun:
    """The figures of one (N, max) run."""

    waiters: int
    max: int
    workers: int
    hold_s: float = 0.0
    acquired_at: dict[str, float] = field(default_factory=dict, repr=False)
    gaps_s: list[float] = field(default_factory=list)
    requests: dict[str, float] = field(default_factory=dict)
    messages: dict[str, float] = field(default_factory=dict)
    release_requests: int = 0
    acquisitions: int = 0
    overtakes: int = 0
    violations: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        total = sum(self.requests.values())
        per = (lambda n: round(n / self.acquisitions, 3)) if self.acquisitions else (lambda n: None)
        return {
            "waiters": self.waiters, "max": self.max, "workers": self.workers, "hold_ms": self.hold_s * 1000,
            "acquisitions": self.acquisitions, "duration_s": round(self.duration_s, 3),
            "handoff_gap": summary_ms(self.gaps_s),
            "requests": self.requests, "requests_total": total, "release_requests": self.release_requests,
            "requests_per_acquisition": per(total - self.release_requests),
            "requests_per_acquire_release_cycle": per(total),
            "messages_received": self.messages,
            "max_overtakes": self.overtakes, "safety_violations": self.violations,
        }


def worker_count(waiters: int) -> int:
    """Few processes: two for small runs (handoffs cross processes), four for 1000 waiters."""
    return 2 if waiters < 500 else 4


async def run_queue(member: EtcdMember, waiters: int, max_slots: int, *, hold_s: float = 0.0,
                    lease_ttl_s: int = 10, settle_s: float = 0.5, timeout_s: float = 120.0) -> QueueRun:
    """One run of ``waiters`` simulated hosts competing for ``max_slots`` slots; see the module doc.

    ``settle_s`` passes between the last waiter queueing and the first slot
    opening, so worker start-up (watch streams opening) is not measured.
    """
    key_prefix = f"bench-q{waiters}-m{max_slots}-{time.monotonic_ns() % 10**8}/"
    settings = EtcdSettings(endpoints=parse_endpoints(member.client_url, "bench", "endpoint"),
                            key_prefix=key_prefix, request_timeout_s=10.0)
    store = EtcdStore(settings)
    own = CountingStore(store)  # the coordinator's own requests, taken out of etcd's totals
    client = SemaphoreClient(own, "", key_prefix)
    client.reset(max_slots, client.read_raw())
    seeds = [f"seed-{i}" for i in range(max_slots)]
    for seed in seeds:  # every slot starts taken, so each acquisition follows one release
        client.lock(seed)
    recorder = GroupRecorder(store, "", key_prefix)
    recorder.start()
    result = QueueRun(waiters, max_slots, worker_count(waiters), hold_s)
    holders = [f"host-{i:04d}" for i in range(waiters)]
    await asyncio.sleep(0.2)  # let the recorder's watch open before the "before" scrape
    before = member.metrics()
    own.reset()
    deadline = time.monotonic() + timeout_s
    procs = [await _spawn_worker(member, key_prefix, holders[w::result.workers], hold_s, lease_ttl_s)
             for w in range(result.workers)]
    try:
        while recorder.queued < waiters:
            if time.monotonic() > deadline or any(p.returncode is not None for p in procs):
                raise RuntimeError(f"only {recorder.queued} of {waiters} waiters queued")
            await asyncio.sleep(0.01)
        await asyncio.sleep(settle_s)
        t0 = time.monotonic()
        released: dict[str, float] = {}
        for seed in seeds:  # staggered like the acquirers' releases will be
            await asyncio.to_thread(client.unlock, seed)
            released[seed] = time.time()
            await asyncio.sleep(hold_s / max_slots)
        for proc in procs:
            await _collect(proc, result, released, deadline)
        result.duration_s = time.monotonic() - t0
        await asyncio.sleep(0.2)  # let the recorder see the last release
        after = member.metrics()
    finally:
        await asyncio.gather(*(_close_worker(p) for p in procs))
        recorder.stop()
        store.close()
    result.requests = _subtract_own(requests_by_method(before, after), own)
    result.messages = _subtract_own(requests_by_method(before, after, "grpc_server_msg_received_total"), own)
    _analyse(result, recorder, released, holders)
    return result


async def _spawn_worker(member: EtcdMember, key_prefix: str, holders: list[str], hold_s: float,
                        lease_ttl_s: int) -> asyncio.subprocess.Process:
    spec = {"endpoint": member.client_url, "key_prefix": key_prefix, "group": "", "holders": holders,
            "hold_s": hold_s, "lease_ttl_s": lease_ttl_s}
    return await asyncio.create_subprocess_exec(sys.executable, str(WORKER), json.dumps(spec),
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)


async def _collect(proc: asyncio.subprocess.Process, result: QueueRun, released: dict[str, float],
                   deadline: float) -> None:
    """Read one worker's report: when each of its hosts acquired and released, and its release requests."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), max(1.0, deadline - time.monotonic()))
    if not line:
        raise RuntimeError("a queue worker died; see its stderr above")
    report = json.loads(line)
    for holder, record in report["records"].items():
        released[holder] = record["released"]
        result.acquired_at[holder] = record["acquired"]
    result.release_requests += report["release_requests"]


async def _close_worker(proc: asyncio.subprocess.Process) -> None:
    """Tell the worker to revoke its lease and exit; kill it if it does not within 15 s."""
    if proc.stdin is not None and not proc.stdin.is_closing():
        proc.stdin.write(b"close\n")
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()


def _analyse(result: QueueRun, recorder: GroupRecorder, released: dict[str, float], holders: list[str]) -> None:
    """Gaps, acquisition count, fairness and safety from the recorded etcd history."""
    docs, arrivals = recorder.snapshot()
    events = slot_events(docs)
    for freed, taken in pair_handoffs(events):
        assert freed.holder is not None and taken.holder is not None
        result.gaps_s.append(result.acquired_at[taken.holder] - released[freed.holder])
    served = [e.holder for e in events if e.kind == "acquire" and e.holder is not None]
    result.acquisitions = len(served)
    result.overtakes = max_overtakes(arrivals, served)
    result.violations = recorder.violations + recorder.broken
    if result.acquisitions != len(holders) or set(served) != set(holders):
        result.violations.append(f"{result.acquisitions} acquisitions for {len(holders)} waiters")


def _subtract_own(requests: dict[str, float], own: CountingStore) -> dict[str, float]:
    """etcd's per-method growth less the coordinator's reads (Range) and guarded writes (Txn)."""
    adjusted = dict(requests)
    adjusted["KV/Range"] = adjusted.get("KV/Range", 0.0) - own.reads
    adjusted["KV/Txn"] = adjusted.get("KV/Txn", 0.0) - own.writes
    return {k: v for k, v in sorted(adjusted.items()) if v}

