"""Shared fixtures: real etcd processes and private dbus-daemons (no mocks of either)."""

from tests.fixtures.dbus_fixtures import *  # noqa: F401,F403
from tests.fixtures.etcd_fixtures import *  # noqa: F401,F403

import os

# The real-systemd e2e (tests/e2e) runs only through `make e2e`, which prepares its root filesystem.
collect_ignore = [] if os.environ.get("LOCKSMITHD_E2E") == "1" else ["e2e"]
