"""What the settings loader reads of the host, handed in by the entry points (settings/ may not import host/).

The entry points pass ``locksmithd.host.reads.HOST_READS``; the loader asks it only for what the settings
need (a configuration file, the machine id, the local zone when a window has no zone of its own).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo

from locksmithd.core.file_kinds import ReadFile


@dataclass(frozen=True)
class HostReads:
    """``read_file(path, limit)``: the non-blocking reader of small regular files; ``holder_id(path, mode)``:
    this host's holder id from the machine-id file (IdentityError when unusable); ``zone(tz)``: the local
    zone and its name, from ``TZ`` (may be None) or /etc/localtime."""

    read_file: ReadFile
    holder_id: Callable[[str, str], str]
    zone: Callable[[str | None], tuple[tzinfo, str]]
