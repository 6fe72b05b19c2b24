"""This host's identity: the semaphore holder id (machine-id or an override), boot id and container manager."""

from __future__ import annotations

import os
import stat

from locksmithd.core.host_defaults import DEFAULT_BOOT_ID_PATH, DEFAULT_MACHINE_ID_PATH
from locksmithd.core.names import name_problem
from locksmithd.errors import IdentityError
from locksmithd.host.files import read_regular_file

DEFAULT_CONTAINER_PATH = "/run/systemd/container"
"""Where systemd, as PID 1 of a container, writes the container manager's name (nspawn, lxc, docker...)."""
_CONTAINER_NAME_LIMIT = 256
_READ_LIMIT = 4096


def validate_holder_id(value: str, source: str, key: str) -> str:
    """Return ``value`` if it is usable as a semaphore holder id, else raise IdentityError.

    The rule is ``core.names.name_problem``'s (non-empty, at most 256
    characters, valid UTF-8, no whitespace or control characters). ``source``
    and ``key`` name where the value came from, for the error.
    """
    problem = name_problem(value)
    if problem is not None:
        raise IdentityError(source, key, value, problem)
    return value


def read_machine_id(path: str = DEFAULT_MACHINE_ID_PATH) -> str:
    """Return the machine id stored at ``path``, without its trailing newline.

    Raises IdentityError (source ``path``, key "machine-id") if the file is
    missing, unreadable, empty, still "uninitialized" (systemd's first-boot
    placeholder), not a regular file (a FIFO or device could block or never
    end) or not a valid holder id. Never returns an empty string.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise IdentityError(path, "machine-id", "", "not a regular file")
        with open(path, encoding="utf-8") as handle:
            text = handle.read(_READ_LIMIT)
    except OSError as exc:
        raise IdentityError(path, "machine-id", "", f"cannot read the machine id ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise IdentityError(path, "machine-id", "", "the machine id is not UTF-8 text") from exc
    machine_id = text.strip()
    if machine_id == "":
        raise IdentityError(path, "machine-id", "", "the machine id file is empty")
    if machine_id == "uninitialized":
        raise IdentityError(path, "machine-id", machine_id, "the machine id is not initialized yet")
    return validate_holder_id(machine_id, path, "machine-id")


def read_holder_id(path: str = DEFAULT_MACHINE_ID_PATH, mode: str = "machine-id") -> str:
    """This host's holder id: the machine id, or for ``mode`` "app-specific" the id derived from it.

    Raises IdentityError as ``read_machine_id`` does, and when an app-specific
    id is asked of a machine id that is not 32 hex digits.
    """
    machine_id = read_machine_id(path)
    if mode != "app-specific":
        return machine_id
    from locksmithd.core.app_specific import app_specific_id  # hashlib: only for the hosts that use it

    try:
        return app_specific_id(machine_id)
    except ValueError as exc:
        raise IdentityError(path, "machine-id", machine_id, f"{exc}: cannot derive an app-specific id") from None


def read_boot_id(path: str = DEFAULT_BOOT_ID_PATH) -> str | None:
    """Return the kernel's boot id (changes on every boot), or None if it cannot be read.

    Opened without blocking and read only when it is a regular file (procfs's
    is): a FIFO at LOCKSMITHD_BOOT_ID_PATH must not wedge the daemon.
    """
    try:
        text = read_regular_file(path, _READ_LIMIT).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):  # NotRegularFile included
        return None
    return text or None


def read_container_manager(path: str = DEFAULT_CONTAINER_PATH) -> str | None:
    """The container manager's name systemd wrote at ``path`` ("systemd-nspawn", "lxc", ...), or None.

    None means not in a container as far as systemd knows: the file is
    absent, unreadable, empty, not UTF-8, or not a regular file (a FIFO or
    device is never opened: it could block or never end). At most 256
    characters are read.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, encoding="utf-8") as handle:
            text = handle.read(_CONTAINER_NAME_LIMIT).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None
