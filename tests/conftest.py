"""Shared fixtures: real etcd processes and private dbus-daemons (no mocks of either)."""

from tests.fixtures.dbus_fixtures import *  # noqa: F401,F403
from tests.fixtures.etcd_fixtures import *  # noqa: F401,F403
