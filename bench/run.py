"""`make bench`: reboot-slot handoff, fairness and cost figures against a real local etcd.

Prints a table with each target and PASS/MISS, and writes everything to
bench/results/latest.json. ``--quick`` runs a smaller set (under 2 minutes); ``--only rollout`` runs
one section (the rollout also prints etcd requests per coordinated reboot).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fleet_bench import measure_idle_daemon, run_rollout, start_idle_daemon, time_status  # noqa: E402
from bench.queue_bench import QueueRun, run_queue  # noqa: E402
from bench.stats import per_reboot  # noqa: E402
from harness.etcd import ETCD_BIN, EtcdCluster, EtcdMember  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
HOLD_S = {1: 0.0, 5: 0.025}  # max=5: hold long enough that slots, not the single CAS document, are scarce


@dataclass(frozen=True)
class Plan:
    waiters: tuple[int, ...]
    maxes: tuple[int, ...]
    saturation: bool  # one extra max=5 run with no hold: slots freed faster than they can be handed out
    rollout_hosts: int
    rss_after_s: float
    cpu_window_s: float
    status_runs: int


FULL = Plan((10, 100, 1000), (1, 5), True, 10, 30.0, 60.0, 20)
QUICK = Plan((10, 100), (1, 5), False, 10, 10.0, 20.0, 20)


class Verdicts:
    """Targets checked so far: (what, figure, target text, passed)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def check(self, what: str, value: float, limit: float, text: str, ok: Callable[[float, float], bool]) -> str:
        passed = bool(ok(value, limit)) and not math.isnan(value)
        self.rows.append({"what": what, "value": value, "target": text, "pass": passed})
        return "PASS" if passed else "MISS"

    def at_most(self, what: str, value: float, limit: float, unit: str = "") -> str:
        return self.check(what, value, limit, f"<= {limit:g}{unit}", lambda v, lim: v <= lim)


def _ms(summary: dict[str, float]) -> str:
    return f"{summary['p50_ms']:6.1f} {summary['p99_ms']:6.1f} {summary['max_ms']:6.1f}"


def report_queue(runs: list[QueueRun], verdicts: Verdicts) -> list[str]:
    lines = ["1-3. Fair queue: simulated hosts on GroupQueue (real waiting code), release via SemaphoreClient.unlock",
             "     gap = holder's unlock returned -> next waiter's acquire returned (time.time(), one host);",
             "     req/acq = etcd gRPC requests started (its /metrics) less the release path's, per acquisition;",
             "     req/cycle = all requests incl. the release (read + guarded write, retried on lost races);",
             "     overtakes = most later arrivals (waiter key create revision) served before an earlier one.",
             f"  {'N':>5} {'max':>3} {'hold':>5} {'procs':>5} | {'gap ms p50    p99    max':>24} | "
             f"{'req/acq':>7} {'(<=4)':5} | {'req/cycle':>9} | {'keepalive+watch msgs':>20} | "
             f"{'overtakes':>9} {'(=0)':4} | safety"]
    for run in runs:
        j = run.as_json()
        per_acq = j["requests_per_acquisition"]
        v_req = verdicts.at_most(f"requests/acquisition N={run.waiters} max={run.max} hold={run.hold_s * 1000:g}ms",
                                 per_acq, 4)
        v_fair = verdicts.at_most(f"max overtakes N={run.waiters} max={run.max}", run.overtakes, 0)
        v_safe = verdicts.at_most(f"safety violations N={run.waiters} max={run.max}", len(run.violations), 0)
        msgs = run.messages.get("Lease/LeaseKeepAlive", 0) + run.messages.get("Watch/Watch", 0)
        lines.append(f"  {run.waiters:>5} {run.max:>3} {run.hold_s * 1000:>3.0f}ms {run.workers:>5} | "
                     f"{_ms(j['handoff_gap']):>24} | {per_acq:7.3f} {v_req:5} | "
                     f"{j['requests_per_acquire_release_cycle']:9.3f} | {msgs:>20.0f} | "
                     f"{run.overtakes:>9} {v_fair:4} | {'ok' if not run.violations else '; '.join(run.violations)} "
                     f"{v_safe if run.violations else ''}")
    for max_slots in sorted({r.max for r in runs}):
        series = [r for r in runs if r.max == max_slots and r.hold_s == HOLD_S.get(max_slots, r.hold_s)]
        if len(series) < 2:
            continue
        low, high = series[0], series[-1]
        growth = high.as_json()["requests_per_acquisition"] / low.as_json()["requests_per_acquisition"]
        verdict = verdicts.at_most(f"requests/acquisition growth N={low.waiters}->{high.waiters} max={max_slots}",
                                   growth, 1.10)
        lines.append(f"  req/acq growth N={low.waiters}->{high.waiters}, max={max_slots}: x{growth:.3f} "
                     f"(flat: target <= x1.10) {verdict}")
    return lines


def report_rollout(rollout: dict[str, Any], verdicts: Verdicts) -> list[str]:
    r = rollout
    v_ratio = verdicts.at_most("rollout total / ideal", r["ratio"], 1.10)
    v_gap = verdicts.at_most("rollout handoff gap max (ms)", r["handoff_gap"]["max_ms"], 250, " ms")
    v_safe = verdicts.at_most("rollout safety violations", len(r["safety_violations"]), 0)
    rs = r["restart_s"]
    return [
        f"4. Rolling reboot: {r['hosts']} real locksmithd hosts, max {r['max']}, reboot delay {r['reboot_delay_s']:g} s",
        f"   total (need_reboot -> every host rebooted, released, idle): {r['total_s']:.2f} s",
        f"   ideal = ceil({r['hosts']}/{r['max']}) x ({r['reboot_delay_s']:g} s + restart {rs['median']:.3f} s)"
        f" = {r['ideal_s']:.2f} s;  ratio {r['ratio']:.3f} (target <= 1.10) {v_ratio}",
        f"   restart = daemon spawn -> its state file says idle (slot released by then), polled every 5 ms;"
        f" median of {r['hosts']} reboots (min {rs['min']:.3f}, max {rs['max']:.3f} s)",
        f"   handoff gap (watch saw release -> watch saw next acquisition) ms p50/p99/max: "
        f"{_ms(r['handoff_gap'])}  (target max <= 250 ms) {v_gap}",
        f"   where the rest goes, ms p50/max: need_reboot -> first acquisition {r['need_reboot_to_first_acquire_ms']:.0f};"
        f" acquisition -> logind Reboot call {r['acquire_to_reboot_call']['p50_ms']:.0f}/"
        f"{r['acquire_to_reboot_call']['max_ms']:.0f}; Reboot call -> daemon exited {r['shutdown_s']['p50_ms']:.0f}/"
        f"{r['shutdown_s']['max_ms']:.0f}",
        f"   most holders seen {r['max_holders_seen']} of max {r['max']}; safety violations "
        f"{len(r['safety_violations'])} {v_safe}",
        *report_requests(r),
    ]


def report_requests(r: dict[str, Any]) -> list[str]:
    """etcd's own gRPC counters over the rollout, by method, in total and per coordinated reboot."""
    lines = [f"   etcd requests per coordinated reboot ({r['hosts']} reboots; etcd's /metrics from need_reboot to all idle",
             "   again: each host's queueing, slot, reboot, second start, health and release; each daemon has its own",
             "   lease, watch stream and connection; its first start and last stop are outside the window)",
             f"     {'gRPC method':22} {'calls':>6} {'msgs':>6} | {'calls/reboot':>12} {'msgs/reboot':>11}"]
    for method, calls, msgs, calls_each, msgs_each in per_reboot(r["etcd_requests"],
                                                                  r.get("etcd_messages_received", {}), r["hosts"]):
        lines.append(f"     {method:22} {calls:6.0f} {msgs:6.0f} | {calls_each:12.2f} {msgs_each:11.2f}")
    lines.append("     (calls: unary requests and streams opened; msgs: messages etcd received: Watch msgs are"
                 " watch creates and cancels, LeaseKeepAlive msgs keep-alives)")
    return lines


def report_idle(idle: dict[str, Any], quick: bool) -> list[str]:
    note = " (--quick: shortened windows; full run: 30 s / 60 s)" if quick else ""
    return [f"5. Idle daemon (strategy etcd-lock, nothing to do){note}, measured while the other benchmarks ran",
            f"   VmRSS {idle['rss_after_s']:g} s after start: {idle['vm_rss_kib'] / 1024:.1f} MiB;"
            f" CPU (utime+stime) over {idle['cpu_window_s']:g} s from idle: {idle['cpu_in_window_s']:.2f} s"
            f" (start-up to idle: {idle['start_to_idle_s']:.2f} s wall, {idle['cpu_to_idle_s']:.2f} s CPU)"
            "  (no target given)"]


def report_status(status: dict[str, Any]) -> list[str]:
    return [f"6. locksmithctl status (fresh process each run, group with 1 holder and 3 waiters):"
            f" median {status['median_s'] * 1000:.0f} ms of {status['runs']} (min {status['min_s'] * 1000:.0f},"
            f" max {status['max_s'] * 1000:.0f}); queue shown: {status['shows_queue']}  (no target given)"]


def _etcd_version() -> str:
    try:
        out = subprocess.run([ETCD_BIN, "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].split(":", 1)[1].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


SECTIONS = ("queue", "rollout", "idle", "status")


async def bench(plan: Plan, quick: bool, workdir: Path,
                only: frozenset[str] = frozenset(SECTIONS)) -> tuple[dict[str, Any], list[str], bool]:
    verdicts = Verdicts()
    lines: list[str] = []
    errors: list[str] = []
    results: dict[str, Any] = {"meta": {
        "mode": "quick" if quick else "full", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(), "etcd": _etcd_version(), "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg()[0]}}
    began = time.monotonic()
    with EtcdCluster.start(1, data_root=workdir / "etcd") as cluster:
        member: EtcdMember = cluster.members[0]

        async def section(name: str, coro: Any) -> Any:
            try:
                return await coro
            except Exception as error:  # report and go on with the other sections
                errors.append(f"{name}: {error!r}")
                traceback.print_exc()
                return None

        status = idle = rollout = None
        if "status" in only:
            status = await section("status", asyncio.to_thread(time_status, member, plan.status_runs))
        idle_task = None
        started = await section("idle daemon", start_idle_daemon(member, workdir)) if "idle" in only else None
        if started is not None:
            idle_host, to_idle_s = started
            idle_task = asyncio.create_task(measure_idle_daemon(idle_host, to_idle_s, plan.rss_after_s,
                                                                plan.cpu_window_s))
        runs: list[QueueRun] = []
        cases = [(n, m, HOLD_S[m]) for n in plan.waiters for m in plan.maxes] if "queue" in only else []
        if plan.saturation and cases:
            cases.append((max(plan.waiters), 5, 0.0))
        for waiters, max_slots, hold_s in cases:
            print(f"... queue N={waiters} max={max_slots} hold={hold_s * 1000:g}ms", file=sys.stderr, flush=True)
            run = await section(f"queue N={waiters} max={max_slots}", run_queue(member, waiters, max_slots,
                                                                                hold_s=hold_s))
            if run is not None:
                runs.append(run)
        results["queue"] = [r.as_json() for r in runs]
        if "rollout" in only:
            print(f"... rollout of {plan.rollout_hosts} daemons", file=sys.stderr, flush=True)
            rollout = await section("rollout", run_rollout(member, workdir / "rollout", hosts=plan.rollout_hosts))
        if idle_task is not None:
            print("... waiting for the idle-daemon window", file=sys.stderr, flush=True)
            idle = await section("idle daemon", idle_task)
            await idle_host.stop()
    if runs:
        lines += report_queue(runs, verdicts)
    if rollout is not None:
        results["rollout"] = rollout.as_json()
        lines += report_rollout(results["rollout"], verdicts)
    if idle is not None:
        results["idle_daemon"] = idle.as_json()
        lines += report_idle(results["idle_daemon"], quick)
    if status is not None:
        results["status"] = status
        lines += report_status(status)
    results["targets"] = verdicts.rows
    results["errors"] = errors
    results["meta"]["wall_s"] = round(time.monotonic() - began, 1)
    missed = [row["what"] for row in verdicts.rows if not row["pass"]]
    lines.append(f"targets: {len(verdicts.rows) - len(missed)} PASS, {len(missed)} MISS"
                 + (f" ({'; '.join(missed)})" if missed else "")
                 + (f"; ERRORS: {'; '.join(errors)}" if errors else ""))
    return results, lines, not errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run (N=10,100; shorter idle windows)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write results [{RESULTS}]")
    parser.add_argument("--only", action="append", choices=SECTIONS, metavar="SECTION",
                        help=f"run only this section (repeatable; one of {', '.join(SECTIONS)}) [all]")
    parser.add_argument("--rollout-hosts", type=int, metavar="N", help="daemons in the rollout [10]")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.rollout_hosts:
        plan = dataclasses.replace(plan, rollout_hosts=args.rollout_hosts)
    with tempfile.TemporaryDirectory(prefix="locksmithd-bench-") as tmp:
        results, lines, ok = asyncio.run(bench(plan, args.quick, Path(tmp), frozenset(args.only or SECTIONS)))
    meta = results["meta"]
    header = (f"locksmithd benchmark ({meta['mode']}): etcd {meta['etcd']} single member on loopback, "
              f"{meta['cpus']} CPUs, load average {meta['loadavg_at_start']:.2f} at start, {meta['wall_s']:.0f} s")
    print("\n".join([header, *lines]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    print(f"results: {args.json}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
