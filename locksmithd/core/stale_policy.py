"""What a waiting host does about a holder past its deadline with no live daemon: the policy and its parser."""

from __future__ import annotations

import enum


class StalePolicy(enum.Enum):
    """What a waiting host does about a holder past its deadline with no live daemon."""

    HALT = "halt"  # halt the group, naming the host and how late it is (default: a human decides)
    RECLAIM = "reclaim"  # take its slot back in one guarded transaction (the host may still be down)


def parse_stale_policy(text: str) -> StalePolicy:
    """``halt`` or ``reclaim`` (any case); ValueError otherwise."""
    try:
        return StalePolicy(text.strip().lower())
    except ValueError:
        raise ValueError("expected halt or reclaim") from None
