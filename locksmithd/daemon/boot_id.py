"""This boot's id as the daemon records it with a slot: the kernel's, or in a container its own boot's."""

from __future__ import annotations

import logging

from locksmithd.bus.systemd import SystemdClient
from locksmithd.core.boot_id import container_boot_id
from locksmithd.core.host_defaults import DEFAULT_BOOT_ID_PATH
from locksmithd.core.names import printable
from locksmithd.errors import BusError
from locksmithd.host.identity import DEFAULT_CONTAINER_PATH, read_boot_id, read_container_manager

log = logging.getLogger("locksmithd")


async def resolve_boot_id(systemd: SystemdClient, kernel_path: str = DEFAULT_BOOT_ID_PATH,
                          container_path: str = DEFAULT_CONTAINER_PATH) -> str | None:
    """The id of this boot: a reboot changes it, a daemon restart does not. None if unknown.

    Outside a container (no manager name at ``container_path``) it is the
    kernel's boot id read at ``kernel_path``. In a container the kernel's id
    survives the container's reboots (the manager's own file over it is hidden
    by ``ProtectKernelTunables=yes``), so the id is derived from the kernel's
    and the moment the container's systemd started (``core/boot_id.py``).
    When that moment cannot be read, one warning says so and the kernel's id
    is used: a reboot of the container then looks like the same boot. Never
    raises (the boot id is best effort, as it always was).
    """
    kernel_id = read_boot_id(kernel_path)
    manager = read_container_manager(container_path)
    if manager is None or kernel_id is None:
        return kernel_id
    try:
        boot_id = container_boot_id(kernel_id, await systemd.userspace_timestamp_monotonic_us())
    except (BusError, ValueError) as error:
        reason = error.one_line() if isinstance(error, BusError) else str(error)
        log.warning("running in a %s container, but cannot tell its boots apart (%s): recording the kernel's "
                    "boot id, so a reboot of this container will look like the same boot (no health checks, "
                    "no post-boot hooks)", printable(manager, 100), reason)
        return kernel_id
    log.info("running in a %s container: boot id %s (from the kernel's %s and when this container's init started)",
             printable(manager, 100), boot_id, printable(kernel_id, 100))
    return boot_id
