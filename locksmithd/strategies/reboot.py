"""Strategy "reboot": reboot as soon as the window allows, without a lock."""

from __future__ import annotations

from datetime import datetime

from locksmithd.strategies.base import WithoutSlot


class ImmediateRebootStrategy(WithoutSlot):
    """Permission is always granted at once; nothing to release."""

    label = "reboot"
    enabled = True
    uses_lock = False

    async def acquire(self, deadline: datetime | None) -> bool:
        return True
