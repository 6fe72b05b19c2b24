"""Strategy "reboot": reboot as soon as the window allows, without a lock."""

from __future__ import annotations

from datetime import datetime

from locksmithd.core.strategy_labels import REBOOT
from locksmithd.strategies.base import WithoutSlot

DECLARATION = REBOOT
"""This strategy's label, help and config slice (``core/strategy_labels.py``)."""


class ImmediateRebootStrategy(WithoutSlot):
    """Permission is always granted at once; nothing to release."""

    label = DECLARATION.label
    enabled = True
    uses_lock = False

    async def acquire(self, deadline: datetime | None) -> bool:
        return True
