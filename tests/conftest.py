"""Shared fixtures: real etcd processes and private dbus-daemons (no mocks of either)."""

import os

from tests.fixtures.dbus_fixtures import *  # noqa: F401,F403
from tests.fixtures.etcd_fixtures import *  # noqa: F401,F403

# The daemon runs hooks and checks only from directories nobody but root may write
# (host/commands.py); the directories tests make must be so whatever the caller's umask.
os.umask(0o022)

# The real-systemd e2e (tests/e2e) runs only through `make e2e`, which prepares its root filesystem.
collect_ignore = [] if os.environ.get("LOCKSMITHD_E2E") == "1" else ["e2e"]
