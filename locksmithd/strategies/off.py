"""Strategy "off": locksmithd does nothing and exits."""

from __future__ import annotations

from datetime import datetime

from locksmithd.strategies.base import WithoutSlot


class OffStrategy(WithoutSlot):
    """Never reboots; the daemon logs that it is disabled and exits 0."""

    label = "off"
    enabled = False
    uses_lock = False

    async def acquire(self, deadline: datetime | None) -> bool:
        raise RuntimeError("strategy 'off' never acquires")
