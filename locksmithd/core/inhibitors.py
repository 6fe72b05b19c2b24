"""logind inhibitors: which of them keep this host from rebooting now."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from locksmithd.core.names import printable

INHIBITORS_SIGNATURE = "a(ssssuu)"


@dataclass(frozen=True)
class Inhibitor:
    """One entry of logind's ``ListInhibitors``: what it inhibits (``:``-separated), who, why, mode, uid, pid."""

    what: str
    who: str
    why: str
    mode: str
    uid: int
    pid: int

    @property
    def blocks_shutdown(self) -> bool:
        """A ``block`` inhibitor on ``shutdown`` (``delay`` ones are left to logind)."""
        return self.mode == "block" and "shutdown" in self.what.split(":")

    def __str__(self) -> str:
        return f"{printable(self.who, 100)} (pid {self.pid}): {printable(self.why, 200)}"


def shutdown_blockers(inhibitors: Iterable[Inhibitor]) -> list[Inhibitor]:
    """The inhibitors that must end before this host may reboot."""
    return [inhibitor for inhibitor in inhibitors if inhibitor.blocks_shutdown]


def describe(blockers: Iterable[Inhibitor]) -> str:
    """One line naming who blocks and why ("" when nothing does)."""
    return "; ".join(str(blocker) for blocker in blockers)
