"""The demo's --break scenario: one host fails its health check after its reboot, the rollout halts, an operator
repairs the host and resumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from locksmithd.core.halt import Halt, decode_halt
from locksmithd.etcd.lock import SemaphoreClient
from harness.checker import Observation

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
