"""The demo's displays: a plain event log for CI, or a live table redrawn in place."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import TextIO

LIVE_REFRESH_S = 0.25  # how often the live table is redrawn
STATE_COLOURS = {"idle": "32", "waiting-for-lock": "33", "waiting-for-window": "33", "holding": "35",
                 "warning-users": "35", "rebooting": "31", "down": "90", "booting": "36", "starting": "36",
                 "releasing-after-boot": "36", "checking-health": "36", "unhealthy": "1;31"}


@dataclass(frozen=True)
class HostView:
    """One row of the table: what a host looks like right now."""

    name: str
    state: str
    holder: bool
    reboots: int
    boot: int


@dataclass(frozen=True)
class FleetView:
    """One sample of the whole fleet and the semaphore."""

    at_s: float
    hosts: tuple[HostView, ...]
    max_slots: int | None
    holders: tuple[str, ...]
    waiting: tuple[str, ...]
    most_holders: int
    halt: str = ""  # halt_line() while the group is halted


def _table(view: FleetView, colour: bool) -> list[str]:
    lines = [f"{'HOST':<10} {'STATE':<21} {'HOLDER':<7} {'REBOOTS':>7} {'BOOT':>5}"]
    for host in view.hosts:
        state = f"{host.state:<21}"
        if colour and host.state in STATE_COLOURS:
            state = f"\x1b[{STATE_COLOURS[host.state]}m{state}\x1b[0m"
        lines.append(f"{host.name:<10} {state} {'yes' if host.holder else '-':<7} {host.reboots:>7} {host.boot:>5}")
    return lines


def halt_line(by: str, reason: str) -> str:
    return f"HALTED by {by}: {reason}"


def semaphore_line(view: FleetView) -> str:
    if view.max_slots is None:
        return "semaphore: (not seen yet)"
    available = view.max_slots - len(view.holders)
    holders = ", ".join(view.holders) or "none"
    waiting = f"{len(view.waiting)}" + (f" ({', '.join(view.waiting)})" if view.waiting else "")
    return f"semaphore: available {available}, max {view.max_slots}, holders {holders}; waiting {waiting}"


class PlainDisplay:
    """One timestamped line per event or change: for logs and CI."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._shown_table = False

    def event(self, at_s: float, text: str) -> None:
        self.out.write(f"{at_s:7.2f}s  {text}\n")
        self.out.flush()

    def update(self, view: FleetView, header: str, force: bool = False) -> None:
        if not self._shown_table:
            self._shown_table = True
            for line in [header, *_table(view, colour=False)]:
                self.event(view.at_s, line)

    def close(self) -> None:
        pass


class LiveDisplay:
    """A table redrawn in place with ANSI escapes; events scroll above it."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._drawn = 0
        self._events: list[str] = []
        self._next_draw_s = 0.0

    def event(self, at_s: float, text: str) -> None:
        self._events.append(f"{at_s:7.2f}s  {text}")

    def update(self, view: FleetView, header: str, force: bool = False) -> None:
        if not force and view.at_s < self._next_draw_s:
            return
        self._next_draw_s = view.at_s + LIVE_REFRESH_S
        width = max(40, shutil.get_terminal_size().columns - 1)
        # Back to the table's first line and clear below; hide the cursor while redrawing.
        parts = [f"\x1b[{self._drawn}F\x1b[J"] if self._drawn else ["\x1b[?25l"]
        parts += [line + "\n" for line in self._events]  # these scroll away, so they may wrap
        self._events.clear()
        most = f"most holders at once so far: {view.most_holders} (max {view.max_slots})"
        table = [f"\x1b[1m{header[:width]}\x1b[0m", *_table(view, colour=True), semaphore_line(view)[:width],
                 most[:width]]
        if view.halt:
            table.append(f"\x1b[1;31m{view.halt[:width]}\x1b[0m")
        parts += [line + "\n" for line in table]
        self.out.write("".join(parts))
        self.out.flush()
        self._drawn = len(table)

    def close(self) -> None:
        self.out.write("\x1b[?25h")  # harmless if never hidden
        self.out.flush()
