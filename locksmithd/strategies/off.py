"""Strategy "off": locksmithd does nothing and exits."""

from __future__ import annotations

from datetime import datetime

from locksmithd.core.strategy_labels import OFF
from locksmithd.strategies.base import WithoutSlot

DECLARATION = OFF
"""This strategy's label, help and config slice (``core/strategy_labels.py``)."""


class OffStrategy(WithoutSlot):
    """Never reboots; the daemon logs that it is disabled and exits 0."""

    label = DECLARATION.label
    enabled = False
    uses_lock = False

    async def acquire(self, deadline: datetime | None) -> bool:
        raise RuntimeError("strategy 'off' never acquires")
