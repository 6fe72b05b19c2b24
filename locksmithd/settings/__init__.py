"""The daemon's settings: one table of rows (``table``), read from files, environment and flags once.

The names below are imported on first use, so a tool that needs only some
rows (locksmithctl's etcd options) does not load the loader and its schedules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from locksmithd.settings.conffile import MAX_CONF_BYTES, parse_conf_text, read_conf_file
    from locksmithd.settings.loader import DEFAULT_CONF_PATHS, DaemonSettings, load_settings, merge_layers
    from locksmithd.settings.raw import COMMAND_LINE, ENVIRONMENT, RawSetting
    from locksmithd.settings.table import ALIASES, FLAGS, KNOWN_KEYS, SECRET_KEYS, SETTINGS, Setting, readme_table

_HOMES = {
    "MAX_CONF_BYTES": "conffile", "parse_conf_text": "conffile", "read_conf_file": "conffile",
    "DEFAULT_CONF_PATHS": "loader", "DaemonSettings": "loader", "load_settings": "loader", "merge_layers": "loader",
    "COMMAND_LINE": "raw", "ENVIRONMENT": "raw", "RawSetting": "raw",
    "ALIASES": "table", "FLAGS": "table", "KNOWN_KEYS": "table", "SECRET_KEYS": "table", "SETTINGS": "table",
    "Setting": "table", "readme_table": "table",
}

__all__ = [
    "ALIASES", "COMMAND_LINE", "DEFAULT_CONF_PATHS", "ENVIRONMENT", "FLAGS", "KNOWN_KEYS", "MAX_CONF_BYTES",
    "SECRET_KEYS", "SETTINGS", "DaemonSettings", "RawSetting", "Setting", "load_settings", "merge_layers",
    "parse_conf_text", "read_conf_file", "readme_table",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'locksmithd.settings' has no attribute {name!r}")
    return getattr(importlib.import_module(f"locksmithd.settings.{home}"), name)
