"""Shared fixtures: real etcd processes and private dbus-daemons (no mocks of either)."""

import os

from tests.fixtures.dbus_fixtures import *  # noqa: F401,F403
from tests.fixtures.etcd_fixtures import *  # noqa: F401,F403

# The daemon runs hooks and checks only from directories nobody but root may write
# (host/commands.py); the directories tests make must be so whatever the caller's umask.
os.umask(0o022)
