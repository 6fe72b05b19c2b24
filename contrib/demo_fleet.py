"""What the --break scenario and the closing report read of the demo's fleet (``demo.Fleet`` has it all).

A Protocol, so that demo_break.py and demo_summary.py do not import demo.py back: demo.py imports them.
"""

from __future__ import annotations

import argparse
from typing import Protocol

from locksmithd.core.halt import Halt
from harness.fleet import SemaphoreMonitor, SimulatedHost


class DemoFleet(Protocol):
    """The simulated hosts, the semaphore monitor and the demo's event log."""

    @property
    def args(self) -> argparse.Namespace: ...
    @property
    def hosts(self) -> list[SimulatedHost]: ...
    @property
    def monitor(self) -> SemaphoreMonitor: ...
    @property
    def started_s(self) -> float: ...
    @property
    def waiting(self) -> tuple[str, ...]: ...
    @property
    def halt(self) -> tuple[Halt, int] | None: ...
    def host(self, name: str) -> SimulatedHost: ...
    def note(self, text: str) -> None: ...
    def now_s(self) -> float: ...
