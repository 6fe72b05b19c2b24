"""Where this host's identity and the coordinator state live by default: the settings rows' defaults.

Plain constants below settings/ and host/, so the table documents them and the host edge reads them
without one importing the other.
"""

from __future__ import annotations

DEFAULT_MACHINE_ID_PATH = "/etc/machine-id"
DEFAULT_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
DEFAULT_STATE_FILE = "/run/update-engine/coordinator.conf"
"""The coordinator state file update_engine's tools read (locksmith's path)."""
