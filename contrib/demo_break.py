"""The demo's --break scenario: one host fails its health check after its reboot, the rollout halts, an operator
repairs the host and resumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable

from locksmithd.core.halt import Halt, decode_halt
from locksmithd.etcd.lock import SemaphoreClient
from harness.checker import Observation

from demo_fleet import DemoFleet

if TYPE_CHECKING:
    from demo_display import FleetView

Watch = Callable[[Callable[["FleetView"], bool], str], Awaitable[None]]

# Short health settings for every demo host when one is broken: the broken host halts
# the group 5 s after its boot instead of the default 15 minutes.
BREAK_ENV = {"LOCKSMITHD_HEALTH_TIMEOUT": "5s"}
CHECK_NAME = "50-demo-app"
HALTED_SHOW_S = 3.0  # how long the demo shows the others waiting before it repairs the host
FAILING = "#!/bin/sh\necho 'demo-app: not answering on :8080 (broken by the demo)'\nexit 1\n"
PASSING = "#!/bin/sh\necho 'demo-app: answering on :8080'\nexit 0\n"


@dataclass
class BreakOutcome:
    """What the --break scenario saw: filled in by the rollout, read by the summary."""

    host: str
    halt: Halt | None = None
    halt_at_s: float | None = None
    halt_revision: int = 0
    held_at_halt: tuple[str, ...] = ()
    waiting_at_halt: tuple[str, ...] = ()
    taken_while_halted: list[str] = field(default_factory=list)
    repaired_at_s: float | None = None
    resumed_at_s: float | None = None
    resumed_with: str = ""

    def problems(self) -> list[str]:
        """Why the scenario did not show what it should (empty: it did)."""
        if self.halt is None:
            return [f"the rollout never halted after {self.host} failed its health check"]
        found = []
        if self.halt.by != self.host:
            found.append(f"the halt was set by {self.halt.by}, not by the broken {self.host}")
        if self.taken_while_halted:
            found.append("slots taken while halted: " + ", ".join(self.taken_while_halted))
        if self.resumed_at_s is None:
            found.append("the group was never resumed")
        return found

    def summary_lines(self) -> list[str]:
        if self.halt is None or self.halt_at_s is None:
            return [f"halt: none seen (expected one from {self.host})"]
        lines = [f"halt: at {self.halt_at_s:.2f}s by {self.halt.by}: {self.halt.reason}"]
        held = ", ".join(self.held_at_halt) or "none"
        if self.taken_while_halted:
            lines.append(f"while halted: slots TAKEN by {', '.join(self.taken_while_halted)}")
        else:
            waiting = ", ".join(self.waiting_at_halt) or "none"
            lines.append(f"while halted: no host took a slot (holding {held}; waiting {waiting})")
        if self.resumed_at_s is not None:
            lines.append(f"resumed: at {self.resumed_at_s:.2f}s with {self.resumed_with}, after repairing "
                         f"{self.host} at {self.repaired_at_s:.2f}s")
        return lines


def write_check(health_dir: Path, passing: bool) -> Path:
    """Write the demo's check command into a host's health.d: failing (the break) or passing (the repair)."""
    health_dir.mkdir(parents=True, exist_ok=True)
    path = health_dir / CHECK_NAME
    temporary = path.with_name(f".{CHECK_NAME}.new")  # renamed into place: never half a script
    temporary.write_text(PASSING if passing else FAILING)
    temporary.chmod(0o755)
    temporary.replace(path)
    return path


def read_halt(client: SemaphoreClient) -> tuple[Halt | None, int]:
    """The group's halt record and the revision it was written at ((None, 0) if there is none).

    Raises CorruptDocument for a record that does not decode, StoreError when etcd cannot answer.
    """
    stored = client.store.read(client.halt_key)
    if stored is None:
        return None, 0
    return decode_halt(stored.value, client.halt_key), stored.mod_revision


def holders_at(history: list[Observation], revision: int) -> tuple[str, ...]:
    """The holders of the newest version at or before ``revision``."""
    held: tuple[str, ...] = ()
    for seen in history:
        if seen.revision > revision:
            break
        held = seen.holders
    return held


def taken_after(history: list[Observation], revision: int) -> list[str]:
    """Hosts that appear as holders in a version after ``revision`` without holding at ``revision``."""
    before = set(holders_at(history, revision))
    taken: list[str] = []
    for seen in history:
        if seen.revision > revision:
            taken += [h for h in seen.holders if h not in before and h not in taken]
    return taken


async def break_and_resume(fleet: DemoFleet, broken: BreakOutcome, watch: Watch,
                           ctl: Callable[..., Awaitable[str]]) -> None:
    """--break: the broken host takes a slot first, fails its check and halts the group; the others wait;
    the demo repairs the host and resumes; the rollout then waits for everyone as usual. ``watch(done, what)``
    shows the fleet until ``done(view)`` (DemoError on a dead daemon or the demo's deadline); ``ctl(*args)``
    runs locksmithctl on the group and returns its output (DemoError unless it exits 0)."""
    host = fleet.host(broken.host)
    write_check(host.health_dir, passing=False)
    fleet.note(f"{host.name:<10} its health check {CHECK_NAME} now fails: the update breaks this host")
    host.need_reboot()  # first, so the others are still waiting when it halts the group
    fleet.note(f"update applied on {host.name}: reboot needed")
    await watch(lambda view: host.name in view.holders, f"{host.name} to take a slot")
    others = [h for h in fleet.hosts if h is not host]
    for other in others:
        other.need_reboot()
    if others:
        fleet.note(f"update applied on the other {len(others)} hosts: reboot needed")
    await watch(lambda view: fleet.halt is not None, f"{host.name} to halt the group")
    assert fleet.halt is not None
    broken.halt, broken.halt_revision = fleet.halt
    broken.halt_at_s = fleet.now_s()
    broken.held_at_halt = holders_at(list(fleet.monitor.history), broken.halt_revision)
    broken.waiting_at_halt = tuple(w for w in fleet.waiting if w not in broken.held_at_halt)
    fleet.note(f"HALT by {broken.halt.by}: {broken.halt.reason}")
    fleet.note(f"halted: holders keep their slots ({', '.join(broken.held_at_halt) or 'none'}); "
               f"no other host takes one (waiting: {', '.join(broken.waiting_at_halt) or 'none'})")
    show_until_s = fleet.now_s() + HALTED_SHOW_S
    status = await ctl("status")
    fleet.note("locksmithctl status (while halted), its first lines:")
    for line in status.split("\n\n", 1)[0].splitlines():  # the halt comes first, then a blank line
        fleet.note(f"  {line}")
    await watch(lambda view: view.at_s >= show_until_s, "the halt to be shown")
    write_check(host.health_dir, passing=True)
    broken.repaired_at_s = fleet.now_s()
    fleet.note(f"{host.name:<10} repaired by the operator: its health check {CHECK_NAME} passes now")
    # Everything the monitor saw up to here came before the resume: no new holder may be in it.
    broken.taken_while_halted = taken_after(list(fleet.monitor.history), broken.halt_revision)
    output = await ctl("resume")
    broken.resumed_with = "locksmithctl resume"
    fleet.note(f"locksmithctl resume: {output.replace(chr(10), ', ')}")
    broken.resumed_at_s = fleet.now_s()
    fleet.note(f"resumed with {broken.resumed_with}: the waiting hosts go on as soon as {host.name}, "
               "healthy at its next round of checks, gives its slot back")
