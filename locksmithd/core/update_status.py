"""update_engine's status value and the pure decoding of its ``xdssx`` body."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from locksmithd.errors import MalformedSignal

STATUS_SIGNATURE = "xdssx"
"""D-Bus signature of ``GetStatus`` replies and ``StatusUpdate`` signals."""

NEED_REBOOT = "UPDATE_STATUS_UPDATED_NEED_REBOOT"
"""The operation update_engine reports once an update is staged."""

IDLE = "UPDATE_STATUS_IDLE"
"""The operation update_engine reports when it has nothing to do."""

_FIELDS = ("last_checked_time", "progress", "current_operation", "new_version", "new_size")


@dataclass(frozen=True)
class UpdateStatus:
    """One status report of update_engine, field for field as on the bus."""

    last_checked_time: int
    progress: float
    current_operation: str
    new_version: str
    new_size: int

    @property
    def needs_reboot(self) -> bool:
        """True when an update is installed and only a reboot is missing."""
        return self.current_operation == NEED_REBOOT

    def to_body(self) -> list[object]:
        """The D-Bus body (signature ``xdssx``) that encodes this status."""
        return [
            self.last_checked_time,
            self.progress,
            self.current_operation,
            self.new_version,
            self.new_size,
        ]


def parse_status_body(signature: str, body: Sequence[object]) -> UpdateStatus:
    """Decode a ``GetStatus`` reply or ``StatusUpdate`` signal body.

    Raises ``MalformedSignal`` when ``signature`` is not ``xdssx``, the body
    does not have exactly five items, or an item has the wrong Python type
    (``bool`` is never accepted as an integer; an ``int`` progress is widened
    to ``float``). Nothing is repaired or guessed.
    """
    if signature != STATUS_SIGNATURE:
        raise MalformedSignal(f"status signature is {signature!r}, expected {STATUS_SIGNATURE!r}")
    if len(body) != len(_FIELDS):
        raise MalformedSignal(f"status body has {len(body)} items, expected {len(_FIELDS)}")
    last_checked, progress, operation, version, size = body
    return UpdateStatus(
        last_checked_time=_int(_FIELDS[0], last_checked),
        progress=_float(_FIELDS[1], progress),
        current_operation=_str(_FIELDS[2], operation),
        new_version=_str(_FIELDS[3], version),
        new_size=_int(_FIELDS[4], size),
    )


def _int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedSignal(f"status field {field} is {value!r}, expected an integer")
    return value


def _float(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedSignal(f"status field {field} is {value!r}, expected a number")
    return float(value)


def _str(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise MalformedSignal(f"status field {field} is {value!r}, expected a string")
    return value
