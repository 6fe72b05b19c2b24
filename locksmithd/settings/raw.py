"""One KEY=value as found in a source, before it is parsed."""

from __future__ import annotations

from typing import NamedTuple

ENVIRONMENT = "environment"
COMMAND_LINE = "command line"
DEFAULT = "default"


class RawSetting(NamedTuple):
    """A key and its text as given, with where it came from ("path:line", "environment", ...)."""

    key: str
    value: str
    source: str
