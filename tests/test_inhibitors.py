"""Which logind inhibitors block a reboot (pure)."""

from __future__ import annotations

import pytest

from locksmithd.core.inhibitors import Inhibitor, describe, shutdown_blockers


@pytest.mark.parametrize(("what", "mode", "blocks"), [
    ("shutdown", "block", True), ("sleep:shutdown", "block", True), ("shutdown:idle", "block", True),
    ("shutdown", "delay", False), ("sleep", "block", False), ("handle-power-key", "block", False),
    ("shutdownx", "block", False),
])
def test_only_block_inhibitors_on_shutdown_block(what: str, mode: str, blocks: bool) -> None:
    assert Inhibitor(what, "who", "why", mode, 0, 1).blocks_shutdown is blocks


def test_describe_names_who_and_why_escaped() -> None:
    found = shutdown_blockers([Inhibitor("shutdown", "apt", "kernel\x1b[2J", "block", 0, 12),
                               Inhibitor("sleep", "gnome", "lid", "block", 1000, 13)])
    assert describe(found) == "apt (pid 12): kernel\\x1b[2J"
    assert describe([]) == ""
