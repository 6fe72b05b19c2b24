"""Application-specific ids derived from the machine id, as systemd's sd_id128_get_machine_app_specific().

HMAC-SHA256 keyed by the machine id's 16 bytes over the application id's 16
bytes; the first 16 bytes of the digest, with the UUID version set to 4 and
the variant to DCE (RFC 4122). The machine id cannot be recovered from the
result, so it never leaves the host, and another application's id for the
same machine is unrelated.
"""

from __future__ import annotations

import hashlib
import hmac
import re

LOCKSMITHD_APP_ID = "80266aee432a43e4bbe4ea90e30d85b5"
"""locksmithd's fixed application id (never change it: every host's holder id depends on it)."""

_ID128 = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def id128_bytes(text: str) -> bytes:
    """The 16 bytes of a 128-bit id written as 32 hex digits or as a dashed UUID; ValueError otherwise."""
    if not _ID128.fullmatch(text):
        raise ValueError("not a 128-bit id (32 hex digits)")
    return bytes.fromhex(text.replace("-", ""))


def app_specific_id(machine_id: str, app_id: str = LOCKSMITHD_APP_ID) -> str:
    """The app-specific id of ``machine_id`` for ``app_id``, as 32 lowercase hex digits.

    The same value `systemd-id128 machine-id --app-specific=APP_ID` prints.
    Raises ValueError when either id is not 128 bits of hex.
    """
    digest = bytearray(hmac.new(id128_bytes(machine_id), id128_bytes(app_id), hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x40  # version 4
    digest[8] = (digest[8] & 0x3F) | 0x80  # variant DCE
    return digest.hex()
