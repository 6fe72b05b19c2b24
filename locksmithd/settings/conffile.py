"""Reading shell-style KEY=value files (update.conf, locksmithd.conf): bounded, regular files only."""

from __future__ import annotations

import os
import re

from locksmithd.errors import ConfigError
from locksmithd.core.etcd_config import without_password
from locksmithd.core.file_kinds import NotRegularFile, ReadFile
from locksmithd.settings.raw import RawSetting
from locksmithd.settings.table import ALIASES, SECRET_KEYS, URL_KEYS, hidden

MAX_CONF_BYTES = 1024 * 1024
"""Largest configuration file read; a bigger one is a mistake (or /dev/zero)."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_conf_file(path: str, read: ReadFile, *, must_exist: bool = False) -> list[RawSetting] | None:
    """Parse the KEY=value file at ``path``; None if it is absent and ``must_exist`` is False.

    The file must be a regular file of at most MAX_CONF_BYTES UTF-8 bytes
    (``/dev/null`` reads as empty). ``read`` is the host's non-blocking reader
    of small regular files (``host.files.read_regular_file``, handed in by the
    entry point), so a FIFO or a device is refused instead of hanging or
    filling memory. Raises ConfigError naming the file otherwise.
    """
    if os.path.realpath(path) == os.devnull:
        return []
    try:
        data = read(path, MAX_CONF_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError) as exc:
        if not must_exist:
            return None
        raise ConfigError(path, "file", path, "the file does not exist") from exc
    except NotRegularFile as exc:
        raise ConfigError(path, "file", path, f"cannot read the file: it is {exc.kind}, not a regular file") from exc
    except OSError as exc:
        raise ConfigError(path, "file", path, f"cannot read the file ({exc.strerror})") from exc
    if len(data) > MAX_CONF_BYTES:
        raise ConfigError(path, "file", path, f"the file is larger than {MAX_CONF_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "file", path, "the file is not UTF-8 text") from exc
    return parse_conf_text(text, path)


def parse_conf_text(text: str, path: str) -> list[RawSetting]:
    """Parse shell-style KEY=value lines; the source of each setting is "path:line".

    Blank lines and lines starting with "#" or ";" are skipped; an ``export``
    prefix is tolerated; values may be single- or double-quoted or
    backslash-escaped, and an unquoted " #" starts a comment. Unquoted inner
    spaces are kept (as systemd's EnvironmentFile does). Nothing is expanded.
    A malformed line raises ConfigError naming the file and line number.
    """
    found: list[RawSetting] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith(("export ", "export\t")):
            stripped = stripped[len("export") :].lstrip()
        source = f"{path}:{number}"
        key, sep, rest = stripped.partition("=")
        shown = "(hidden)" if any(secret in stripped for secret in SECRET_KEYS) else (
            without_password(stripped) if any(url_key in stripped for url_key in URL_KEYS) else stripped)
        if not sep:
            raise ConfigError(source, "line", shown, "expected KEY=value")
        if not _NAME.fullmatch(key):
            raise ConfigError(source, "line", shown, f"{key!r} is not a valid variable name")
        try:
            found.append(RawSetting(key, _unquote(rest.lstrip(" \t")), source))
        except ValueError as exc:
            raise ConfigError(source, key, hidden(ALIASES.get(key, key), rest), str(exc)) from exc
    return found


def _unquote(raw: str) -> str:
    """Shell-like unquoting of one value; raises ValueError for unbalanced quotes."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char in " \t":
            end = i
            while end < len(raw) and raw[end] in " \t":
                end += 1
            if end == len(raw) or raw[end] == "#":
                break
            out.append(raw[i:end])
            i = end
        elif char == "'":
            end = raw.find("'", i + 1)
            if end < 0:
                raise ValueError("unterminated single quote")
            out.append(raw[i + 1 : end])
            i = end + 1
        elif char == '"':
            i = _double_quoted(raw, i + 1, out)
        elif char == "\\":
            if i + 1 == len(raw):
                raise ValueError("trailing backslash (line continuation is not supported)")
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _double_quoted(raw: str, i: int, out: list[str]) -> int:
    """Append the double-quoted text starting at ``i`` to ``out``; return the index past the quote."""
    while i < len(raw):
        char = raw[i]
        if char == '"':
            return i + 1
        if char == "\\" and i + 1 < len(raw) and raw[i + 1] in '"\\$`':
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(char)
            i += 1
    raise ValueError("unterminated double quote")
