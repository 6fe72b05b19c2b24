"""Strategy "reboot": reboot as soon as the window allows, without a lock."""

from __future__ import annotations

from datetime import datetime


class ImmediateRebootStrategy:
    """Permission is always granted at once; nothing to release."""

    label = "reboot"
    enabled = True
    uses_lock = False

    async def release_after_boot(self) -> bool:
        return False

    async def acquire(self, deadline: datetime | None) -> bool:
        return True

    async def release(self) -> None:
        return None

    async def close(self) -> None:
        return None
