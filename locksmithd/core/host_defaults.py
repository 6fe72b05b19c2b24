"""Where this host's identity and the coordinator state live by default, and how a holder id may be formed.

Plain constants below settings/ and host/, so the table documents them and the host edge reads them
without one importing the other.
"""

from __future__ import annotations

DEFAULT_MACHINE_ID_PATH = "/etc/machine-id"
DEFAULT_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
DEFAULT_STATE_FILE = "/run/update-engine/coordinator.conf"
"""The coordinator state file update_engine's tools read (locksmith's path)."""

HOLDER_ID_MODES = ("machine-id", "app-specific")
"""The ways a holder id is formed: the machine id as is, or an app-specific id derived from it (core/app_specific.py)."""
