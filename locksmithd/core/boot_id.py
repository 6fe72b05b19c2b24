"""The boot id recorded inside a container: derived from the kernel's boot id and the container's init start.

A container shares its host's kernel, so the kernel's boot id
(``/proc/sys/kernel/random/boot_id``) stays the same when the container
reboots. Container managers (systemd-nspawn, LXC) mount a file of their own
over it, but a unit with ``ProtectKernelTunables=yes`` sees the kernel's file
again. What does change with every boot of the container is the moment its
init (systemd) started, on the kernel's monotonic clock: the manager's
``UserspaceTimestampMonotonic``. The pair (kernel boot id, that moment) names
one boot of one container; this module turns it into an id written like a
kernel boot id (a dashed lowercase UUID), so the holder record's ``boot_id``
keeps its shape. The derivation is fixed: the same pair always gives the same
id, so a daemon restarted within one boot finds its own id again.
"""

from __future__ import annotations

import uuid

CONTAINER_BOOT_NAMESPACE = uuid.UUID("f4d093ad-250a-4d11-b92e-21cc6b72e414")
"""locksmithd's fixed UUID namespace for container boot ids (never change it: recorded ids depend on it)."""


def container_boot_id(kernel_boot_id: str, init_started_us: int) -> str:
    """The boot id of a container whose init started ``init_started_us`` after the kernel booted.

    UUID version 5 (SHA-1, RFC 4122) in ``CONTAINER_BOOT_NAMESPACE`` of the
    text ``"<kernel_boot_id>/<init_started_us>"``, as 36 characters like a
    kernel boot id. ``init_started_us`` is systemd's
    ``UserspaceTimestampMonotonic`` (microseconds on the kernel's monotonic
    clock); a value of 0 or less means systemd does not know it and raises
    ValueError, as does an empty ``kernel_boot_id``: neither names a boot.
    """
    if not kernel_boot_id:
        raise ValueError("no kernel boot id")
    if init_started_us <= 0:
        raise ValueError(f"init start {init_started_us} us is not a moment of this boot")
    return str(uuid.uuid5(CONTAINER_BOOT_NAMESPACE, f"{kernel_boot_id}/{init_started_us}"))
