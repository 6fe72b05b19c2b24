"""A local fleet of real locksmithd processes rolling through one reboot each, shown live."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Awaitable, Callable, TextIO

# The harness lives beside the package in the checkout, not in the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from locksmithd.core.halt import Halt
from locksmithd.errors import LocksmithError
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.ctl.status_view import collect_status
from harness.etcd import EtcdCluster, EtcdLaunchError
from harness.fleet import HostEvent, HostOptions, SemaphoreMonitor, SimulatedHost

from demo_break import BREAK_ENV, BreakOutcome, break_and_resume, read_halt
from demo_summary import Outcome, log_tails, summary
from demo_display import FleetView, HostView, LiveDisplay, PlainDisplay, halt_line, semaphore_line

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
POLL_INTERVAL_S = 0.1  # how often host state files and the monitor are sampled
QUEUE_POLL_S = 0.25  # how often the waiting queue is read from etcd
STARTUP_TIMEOUT_S = 30.0  # first boot of every daemon must reach idle within this
TRANSITION = re.compile(r" state (\S+) -> (\S+)$", re.MULTILINE)  # the daemon's log line per transition


class DemoError(Exception):
    """The demo could not set up or run its fleet; the message says why."""


# -- arguments ---------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="demo.py", description="Start a local etcd and N simulated hosts, each a real locksmithd "
        "with its own private D-Bus, mark an update on all of them and watch the fleet reboot in turn.")
    parser.add_argument("--hosts", type=int, default=5, help="number of hosts [5]")
    parser.add_argument("--max", type=int, default=2, help="hosts that may reboot at once [2]")
    parser.add_argument("--reboot-delay", type=float, default=2.0, metavar="S",
                        help="seconds a host stays down when it reboots [2.0]")
    parser.add_argument("--group", default="", help="reboot group [the default group]")
    parser.add_argument("--keep-dir", action="store_true", help="keep the work dir (host logs, etcd data)")
    parser.add_argument("--no-live", action="store_true",
                        help="one line per change instead of a live table (default when stdout is no TTY)")
    parser.add_argument("--timeout", type=float, default=180.0, metavar="S",
                        help="give up after this many seconds in all [180]")
    parser.add_argument("--window-start", help="reboot window start passed to every host, e.g. 'Mon 04:00'")
    parser.add_argument("--window-length", help="reboot window length passed to every host, e.g. 1h")
    parser.add_argument("--break", dest="break_host", metavar="NAME",
                        help="make host NAME (e.g. host-2) fail its health check after its reboot: the rollout "
                        "halts, the demo repairs the host and runs locksmithctl resume")
    args = parser.parse_args(argv)
    for flag, value, minimum in (("--hosts", args.hosts, 1), ("--max", args.max, 1),
                                 ("--reboot-delay", args.reboot_delay, 0), ("--timeout", args.timeout, 1)):
        if value < minimum:
            parser.error(f"{flag} must be at least {minimum}, got {value:g}")
    if (args.window_start is None) != (args.window_length is None):
        parser.error("--window-start and --window-length go together")
    names = [f"host-{i}" for i in range(args.hosts)]
    if args.break_host is not None and args.break_host not in names:
        parser.error(f"--break {args.break_host!r} names no host; the hosts are {names[0]} to {names[-1]}")
    return args


# -- the fleet ---------------------------------------------------------------

def _ctl_command() -> list[str]:
    beside = Path(sys.executable).parent / "locksmithctl"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "locksmithd.ctl.main"]


async def locksmithctl(endpoints: list[str], group: str, *args: str) -> tuple[int, str]:
    """Run the real CLI against the demo's etcd; returns (exit code, stdout and stderr)."""
    command = [*_ctl_command(), "--endpoint", ",".join(endpoints), "--group", group, *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSMITHCTL_")}
    process = await asyncio.create_subprocess_exec(*command, env=env, stdin=asyncio.subprocess.DEVNULL,
                                                   stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await process.communicate()
    except BaseException:  # cancelled: do not leave it retrying against an etcd about to stop
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace").rstrip()


class Fleet:
    """The simulated hosts, the semaphore monitor and what the displays are fed."""

    def __init__(self, args: argparse.Namespace, workdir: Path, endpoints: list[str], started_s: float,
                 display: PlainDisplay | LiveDisplay) -> None:
        self.args = args
        self.endpoints = endpoints
        self.workdir = workdir
        self.started_s = started_s
        self.display: PlainDisplay | LiveDisplay | None = display
        options = HostOptions(group=args.group, window_start=args.window_start, window_length=args.window_length,
                              extra_env=dict(BREAK_ENV) if args.break_host else {})
        self.hosts = [SimulatedHost(f"host-{i}", workdir / f"host-{i}", endpoints, options=options,
                                    reboot_delay_s=args.reboot_delay, on_event=self._on_event)
                      for i in range(args.hosts)]
        self.monitor = SemaphoreMonitor(endpoints, group=args.group, expected_max=args.max)  # started after set-max
        self.waiting: tuple[str, ...] = ()
        self.halt: tuple[Halt, int] | None = None  # the group's halt record and its revision, read with the queue
        self._last_semaphore: tuple[tuple[str, ...], int | None] = ((), None)
        self._log_offsets: dict[str, int] = {}
        group = f", group {args.group}" if args.group else ""
        broken = f", {args.break_host} broken" if args.break_host else ""
        self.header = (f"locksmithd demo: {args.hosts} hosts, max {args.max}{group}, "
                       f"reboot delay {args.reboot_delay:g}s{broken}")

    def host(self, name: str) -> SimulatedHost:
        return next(h for h in self.hosts if h.name == name)

    def note(self, text: str) -> None:
        """One line in the event log, stamped now (nothing once stopping)."""
        if self.display is not None:
            self.display.event(self.now_s(), text)

    def now_s(self) -> float:
        return time.monotonic() - self.started_s

    def _on_event(self, event: HostEvent) -> None:
        if self.display is None or event.what == "update applied":
            return
        host = next(h for h in self.hosts if h.name == event.host)
        self._report_transitions(host)  # the daemon logged them before this event happened
        text = {"reboot": "logind accepted a reboot: stopping locksmithd",
                "started": f"locksmithd started (boot {host.boots})"}.get(
            event.what, event.what.replace("daemon exited", "locksmithd stopped, exit code"))
        self.display.event(event.at - self.started_s, f"{event.host:<10} {text}")

    def view(self) -> FleetView:
        history = self.monitor.history
        latest = history[-1] if history else None
        holders = latest.holders if latest else ()
        rows = []
        for host in self.hosts:
            running = host.process is not None and host.process.returncode is None
            state = host.daemon_state().get("DAEMON_STATE", "starting") if running else "down"
            if state == "stopped" and running:
                state = "booting"  # the file still shows the previous boot's last state
            rows.append(HostView(host.name, state, host.name in holders, len(host.reboot_times), host.boots))
        waiting = tuple(w for w in self.waiting if w not in holders)  # the queue is read less often
        halt = halt_line(self.halt[0].by, self.halt[0].reason) if self.halt else ""
        return FleetView(self.now_s(), tuple(rows), latest.max if latest else None, holders, waiting,
                         self.monitor.max_holders_seen, halt)

    def sample(self, force: bool = False) -> FleetView:
        """Take a view, report what changed since the last one, and refresh the display."""
        view = self.view()
        if self.display is None:
            return view
        self.display.update(view, f"{self.header}   t={view.at_s:.1f}s", force=force)
        for host in self.hosts:
            self._report_transitions(host)
        if (view.holders, view.max_slots) != self._last_semaphore:
            self._last_semaphore = (view.holders, view.max_slots)
            self.display.event(view.at_s, semaphore_line(view))
        return view

    def _report_transitions(self, host: SimulatedHost) -> None:
        # In plain mode every transition gets a line. The state file can change
        # several times between two samples (holding -> warning-users ->
        # rebooting takes milliseconds), but the daemon logs each one.
        if not isinstance(self.display, PlainDisplay):
            return
        offset = self._log_offsets.get(host.name, 0)
        try:
            with open(host.workdir / "locksmithd.log", "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self._log_offsets[host.name] = offset + len(complete)
        for match in TRANSITION.finditer(complete.decode(errors="replace")):
            self.display.event(self.now_s(), f"{host.name:<10} {match[1]} -> {match[2]}")

    def dead_daemons(self) -> list[str]:
        """Hosts whose locksmithd exited by itself (a simulated reboot clears ``process`` first)."""
        return [f"{h.name}: locksmithd exited with code {h.process.returncode} outside a reboot"
                for h in self.hosts if h.process is not None and h.process.returncode is not None]

    async def poll_queue(self) -> None:
        """Keep ``waiting`` up to date from etcd's queue, as ``locksmithctl status`` shows it."""
        settings = EtcdSettings(endpoints=parse_endpoints(self.endpoints, "demo", "endpoints"),
                                request_timeout_s=2.0)
        store = EtcdStore(settings)
        client = SemaphoreClient(store, self.args.group)
        try:
            while True:
                try:
                    report = await asyncio.to_thread(collect_status, client, self.args.group, "", datetime.now(timezone.utc))
                    self.waiting = tuple(w.holder for w in report.waiters)
                    halt, revision = await asyncio.to_thread(read_halt, client)
                    self.halt = (halt, revision) if halt is not None else None
                except LocksmithError:
                    pass  # the table keeps the last answer
                await asyncio.sleep(QUEUE_POLL_S)
        finally:
            store.close()

    async def stop(self) -> None:
        """Stop every host and the monitor; never raises."""
        self.display = None
        await asyncio.gather(*(h.stop() for h in self.hosts), return_exceptions=True)
        try:
            await asyncio.to_thread(self.monitor.stop)
        except Exception:  # noqa: BLE001 - cleanup goes on
            pass


# -- the run -----------------------------------------------------------------

async def _watch(fleet: Fleet, deadline_s: float, done: Callable[[FleetView], bool], what: str) -> None:
    """Sample and show the fleet until ``done(view)``; DemoError on a dead daemon or the deadline."""
    while True:
        view = fleet.sample()
        if done(view):
            fleet.sample(force=True)
            return
        dead = fleet.dead_daemons()
        if dead:
            fleet.sample(force=True)
            raise DemoError("; ".join(dead))
        if fleet.now_s() > deadline_s:
            fleet.sample(force=True)
            raise DemoError(f"gave up at t={deadline_s:.0f}s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL_S)


def _all_idle(view: FleetView) -> bool:
    return all(h.state == "idle" for h in view.hosts)


def _rolled_through(view: FleetView) -> bool:
    return not view.holders and all(h.reboots >= 1 and h.boot >= 2 and h.state == "idle" for h in view.hosts)


async def rollout(fleet: Fleet, outcome: Outcome) -> None:
    """Set max, boot the hosts, apply the update everywhere and wait until all are back."""
    args = fleet.args
    code, output = await locksmithctl(fleet.endpoints, args.group, "set-max", str(args.max))
    if code != 0:
        raise DemoError(f"locksmithctl set-max {args.max} failed ({code}): {output}")
    if fleet.display is not None:
        fleet.display.event(fleet.now_s(), f"etcd {', '.join(fleet.endpoints)}, work dir {fleet.workdir}")
        fleet.display.event(fleet.now_s(), f"locksmithctl set-max {args.max}: {output.replace(chr(10), ', ')}")
    await asyncio.to_thread(fleet.monitor.start)
    starting = asyncio.gather(*(h.start() for h in fleet.hosts), return_exceptions=True)
    try:
        started = await asyncio.shield(starting)
    except asyncio.CancelledError:
        # Let every start finish first: a dbus-daemon being started in a
        # thread when cancelled would be unknown to its host's stop().
        await starting
        raise
    for result in started:
        if isinstance(result, BaseException):
            raise result
    await _watch(fleet, min(args.timeout, fleet.now_s() + STARTUP_TIMEOUT_S), _all_idle, "every host to boot")
    if args.break_host:
        outcome.broken = BreakOutcome(args.break_host)
        outcome.updates_at_s = fleet.now_s()
        await break_and_resume(fleet, outcome.broken, lambda done, what: _watch(fleet, args.timeout, done, what),
                               operator(fleet))
    else:
        for host in fleet.hosts:
            host.need_reboot()
        outcome.updates_at_s = fleet.now_s()
        fleet.note(f"update applied on all {args.hosts} hosts: reboot needed")

    def done(view: FleetView) -> bool:
        for host in view.hosts:
            if host.boot >= 2 and host.state == "idle":
                outcome.back_at_s.setdefault(host.name, view.at_s)
        return _rolled_through(view)

    await _watch(fleet, args.timeout, done, "every host to reboot and come back idle")
    outcome.done_at_s = fleet.now_s()


def operator(fleet: Fleet) -> Callable[..., Awaitable[str]]:
    """The real locksmithctl against the demo's group, as an operator runs it: its output; DemoError unless 0."""
    async def run_ctl(*args: str) -> str:
        code, output = await locksmithctl(fleet.endpoints, fleet.args.group, *args)
        if code != 0:
            raise DemoError(f"locksmithctl {' '.join(args)} failed ({code}): {output}")
        return output
    return run_ctl


async def run(args: argparse.Namespace, workdir: Path, endpoints: list[str], started_s: float,
              out: TextIO, live: bool) -> int:
    display = LiveDisplay(out) if live else PlainDisplay(out)
    fleet = Fleet(args, workdir, endpoints, started_s, display)
    outcome = Outcome()
    queue_task = asyncio.create_task(fleet.poll_queue())
    try:
        try:
            await rollout(fleet, outcome)
        except DemoError as error:
            outcome.problems.append(str(error))
        finally:
            display.close()
        code, status_text = await locksmithctl(endpoints, args.group, "status")
        if code != 0:
            outcome.problems.append(f"locksmithctl status exited {code}")
        report = summary(fleet, outcome, status_text)
        if outcome.problems:
            report += log_tails(fleet)
        out.write("\n".join(report) + "\n")
        out.flush()
        return EXIT_OK if not outcome.problems else EXIT_FAILED
    finally:
        queue_task.cancel()
        await asyncio.gather(queue_task, return_exceptions=True)
        await fleet.stop()


async def _run_cancellable(args: argparse.Namespace, workdir: Path, endpoints: list[str], started_s: float,
                           out: TextIO, live: bool) -> int:
    # SIGTERM cancels like Ctrl-C does, so the same finally blocks clean up.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(args, workdir, endpoints, started_s, out, live)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM outside the event loop: clean up as for Ctrl-C


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the demo; the exit code: 0 all went well, 1 it did not, 130 interrupted."""
    args = parse_args(argv)
    live = not args.no_live and out.isatty()
    started_s = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="locksmithd-demo-"))
    cluster: EtcdCluster | None = None
    message = ""
    try:
        cluster = EtcdCluster.start(1, data_root=workdir / "etcd")
        code = asyncio.run(_run_cancellable(args, workdir, cluster.client_urls, started_s, out, live))
    except (KeyboardInterrupt, asyncio.CancelledError):
        code, message = EXIT_INTERRUPTED, "\ninterrupted: stopped every host, bus and etcd"
    except (DemoError, LocksmithError, EtcdLaunchError, OSError) as error:
        code, message = EXIT_FAILED, f"demo: error: {error}"
    finally:
        if cluster is not None:
            cluster.stop()
        if not args.keep_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    if message:
        print(message, file=sys.stderr)
    if args.keep_dir:
        print(f"work dir kept (host logs, etcd data): {workdir}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
