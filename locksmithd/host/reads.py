"""The host's readers the settings loader is handed by the entry points (``core.host_reads.HostReads``)."""

from __future__ import annotations

from locksmithd.core.host_reads import HostReads
from locksmithd.host.files import read_regular_file
from locksmithd.host.identity import read_holder_id
from locksmithd.host.timezone import local_zone

HOST_READS = HostReads(read_file=read_regular_file, holder_id=read_holder_id, zone=lambda tz: local_zone(tz))
"""The real host: machine-id, /etc/localtime (or TZ) and files read without blocking."""
