"""Facts recorded with a slot: when, by which host and boot, through which tool."""

from __future__ import annotations

import socket
from datetime import datetime, timezone


def describe_holder(*, source: str, now: datetime | None = None, hostname: str | None = None,
                    boot_id: str | None = None) -> dict[str, str]:
    """A small JSON-ready dict stored in the semaphore's ``holder_info`` for one holder.

    ``now`` defaults to the current UTC time and ``hostname`` to this host's
    name; ``boot_id`` is included only when known.
    """
    moment = now or datetime.now(timezone.utc)
    info = {
        "acquired_at": moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "hostname": hostname if hostname is not None else socket.gethostname(),
        "source": source,
    }
    if boot_id:
        info["boot_id"] = boot_id
    return info
