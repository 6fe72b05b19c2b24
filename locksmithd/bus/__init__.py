"""D-Bus adapters: update_engine status, logind reboot and sessions, need-reboot broadcast."""

from locksmithd.bus.connection import connect, disconnect
from locksmithd.bus.logind import LogindClient
from locksmithd.bus.need_reboot import send_need_reboot, send_need_reboot_sync
from locksmithd.bus.update_engine import UpdateEngineWatcher

__all__ = [
    "LogindClient",
    "UpdateEngineWatcher",
    "connect",
    "disconnect",
    "send_need_reboot",
    "send_need_reboot_sync",
]
