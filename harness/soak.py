"""`make soak`: many randomized fault runs on one 3-member etcd cluster, then a summary table.

Each run draws 2 to 4 faults (kinds, targets, timings; with --scenario,
that one fault) from its own seed, which is printed: --replay SEED runs
that one again (the same fault plan, not the exact interleaving of
processes), --seed MASTER the whole sequence of runs. Exit status 1 when
any run broke safety or did not finish cleanly, 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from harness.etcd import EtcdCluster
from harness.faults import SCENARIOS, RunConfig, RunResult, random_faults, run_faults

DEFAULT_RUNS = 200  # about 45 minutes on 2 cores (a check that fails once costs a 10 s re-check)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                        help=f"number of randomized runs [{DEFAULT_RUNS}]")
    parser.add_argument("--seed", type=int, default=None, metavar="MASTER",
                        help="master seed; each run's seed derives from it [random, printed]")
    parser.add_argument("--replay", type=int, action="append", default=[], metavar="SEED",
                        help="run exactly this run seed (repeatable); --runs and --seed are ignored")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS),
                        help="repeat one named single-fault scenario instead of random mixes")
    parser.add_argument("--hosts", type=int, default=4,
                        help="simulated hosts per run [4: with max 2, two can queue behind two holders]")
    parser.add_argument("--max", type=int, default=2, dest="max_holders", help="semaphore max [2]")
    parser.add_argument("--reboot-delay", type=float, default=0.3, help="seconds a simulated reboot takes [0.3]")
    parser.add_argument("--login-delay", type=float, default=1.5,
                        help="warning time of hosts with a logged-in user [1.5]")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a run may take to finish [120]")
    parser.add_argument("--workdir", type=Path, default=None, help="where run directories go [a temp dir]")
    parser.add_argument("--keep", action="store_true", help="keep the directories of passing runs too")
    return parser.parse_args(argv)


def run_seeds(args: argparse.Namespace) -> list[int]:
    if args.replay:
        return list(args.replay)
    master = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    print(f"soak: master seed {master} ({args.runs} runs)", flush=True)
    rng = random.Random(master)
    return [rng.randrange(2**31) for _ in range(args.runs)]


async def soak(args: argparse.Namespace) -> int:
    config = RunConfig(hosts=args.hosts, max_holders=args.max_holders, reboot_delay_s=args.reboot_delay,
                       login_delay_s=args.login_delay, timeout_s=args.timeout)
    seeds = run_seeds(args)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="locksmithd-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    began = time.monotonic()
    cluster = await asyncio.to_thread(EtcdCluster.start, 3, None, root / "etcd")
    try:
        for index, seed in enumerate(seeds, 1):
            result = await one_run(cluster, root, config, seed, args.scenario)
            results.append(result)
            kinds = ", ".join(sorted(result.kinds().elements())) or "none triggered"
            print(f"run {index}/{len(seeds)} seed={seed} {'ok' if result.ok else 'FAILED'} "
                  f"{result.duration_s:.1f}s max-holders={result.max_holders_seen} faults: {kinds}", flush=True)
            for line in result.skipped:
                print(f"  skipped {line}", flush=True)
            if not result.ok:
                print(result.report(), flush=True)
            elif not args.keep:
                shutil.rmtree(result.workdir, ignore_errors=True)
    finally:
        await asyncio.to_thread(cluster.stop)
    print(summary(results, config, time.monotonic() - began))
    passed = bool(results) and all(r.ok for r in results)
    if passed and not args.keep and args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)  # our temp dir; failed runs keep it for their logs
    elif not passed:
        print(f"run directories (daemon logs, etcd logs): {root}")
    return 0 if passed else 1


async def one_run(cluster: EtcdCluster, root: Path, config: RunConfig, seed: int, scenario: str | None) -> RunResult:
    rng = random.Random(seed)
    faults = SCENARIOS[scenario](rng, config) if scenario else random_faults(rng, config)
    workdir = root / f"run-{seed}"
    try:
        return await run_faults(cluster, workdir, faults, name=f"soak{seed}", config=config, seed=seed)
    except Exception as error:  # a harness failure is a failed run, not the end of the soak
        result = RunResult(f"soak{seed}", seed, workdir=str(workdir))
        result.failures.append(f"harness error: {type(error).__name__}: {error}")
        return result


def summary(results: list[RunResult], config: RunConfig, elapsed_s: float) -> str:
    """The table printed at the end: runs, faults injected by kind, violations, failed seeds."""
    injected: Counter[str] = Counter()
    for result in results:
        injected.update(result.kinds())
    durations = [r.duration_s for r in results] or [0.0]
    failed = [r for r in results if not r.ok]
    rows = [
        ("runs", str(len(results))),
        ("passed", str(len(results) - len(failed))),
        ("failed", str(len(failed))),
        ("safety violations", str(sum(len(r.violations) for r in results))),
        ("liveness/end-state failures", str(sum(len(r.failures) for r in results))),
        ("most holders seen", f"{max((r.max_holders_seen for r in results), default=0)} (max {config.max_holders})"),
        ("revisions checked", str(sum(r.revisions_replayed for r in results))),
        ("reboots", str(sum(sum(r.reboots.values()) for r in results))),
        ("faults injected", str(sum(injected.values()))),
        *((f"  {kind}", str(count)) for kind, count in sorted(injected.items())),
        ("faults skipped (no trigger)", str(sum(len(r.skipped) for r in results))),
        ("run time mean / max", f"{statistics.mean(durations):.1f}s / {max(durations):.1f}s"),
        ("wall time", f"{elapsed_s:.0f}s"),
        ("failed run seeds", " ".join(str(r.seed) for r in failed) or "-"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(["", "soak summary", "-" * (width + 20)] + [f"{n:<{width}}  {v}" for n, v in rows])


def main(argv: list[str] | None = None) -> None:
    sys.exit(asyncio.run(soak(parse_args(argv))))


if __name__ == "__main__":
    main()
