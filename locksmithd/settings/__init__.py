"""The daemon's settings: one table of rows (``table``), read from files, environment and flags once."""

from __future__ import annotations

from locksmithd.settings.conffile import MAX_CONF_BYTES, parse_conf_text, read_conf_file
from locksmithd.settings.loader import DEFAULT_CONF_PATHS, DaemonSettings, load_settings, merge_layers
from locksmithd.settings.raw import COMMAND_LINE, ENVIRONMENT, RawSetting
from locksmithd.settings.table import ALIASES, FLAGS, KNOWN_KEYS, SECRET_KEYS, SETTINGS, Setting, readme_table

__all__ = [
    "ALIASES", "COMMAND_LINE", "DEFAULT_CONF_PATHS", "ENVIRONMENT", "FLAGS", "KNOWN_KEYS", "MAX_CONF_BYTES",
    "SECRET_KEYS", "SETTINGS", "DaemonSettings", "RawSetting", "Setting", "load_settings", "merge_layers",
    "parse_conf_text", "read_conf_file", "readme_table",
]
