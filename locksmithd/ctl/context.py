"""What every locksmithctl command shares: validated settings, argument checks and the one exit path."""

from __future__ import annotations

import functools
import os
import re
import stat
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NoReturn, TypeVar

import click

from locksmithd.core.names import name_problem, printable, shown_value
from locksmithd.core.semaphore import MAX_SLOTS
from locksmithd.errors import IdentityError, InvalidName, LocksmithError, UsageError
from locksmithd.etcd.connection import EtcdSettings

if TYPE_CHECKING:  # the etcd client (grpc) is imported only by commands that need it
    from locksmithd.etcd.lock import SemaphoreClient

F = TypeVar("F", bound=Callable[..., Any])

_DIGITS = re.compile(r"[0-9]+")
MAX_ERROR_LINE_CHARS = 2000


@dataclass(frozen=True)
class CtlContext:
    """What every command needs, validated once from flags and LOCKSMITHCTL_* env."""

    etcd: EtcdSettings
    group: str
    machine_id_file: str
    bus_address: str | None
    holder_id_mode: str = "machine-id"

    def semaphore(self) -> SemaphoreClient:
        from locksmithd.etcd.client import EtcdStore
        from locksmithd.etcd.lock import SemaphoreClient

        return SemaphoreClient(EtcdStore(self.etcd), self.group, self.etcd.key_prefix)

    def default_id(self, given: str | None, hint: str = "") -> str:
        """``given`` checked against the naming rule, or this machine's id when None.

        Raises InvalidName (exit 2) naming the ID argument, with ``hint``
        appended, and IdentityError (exit 4) for a missing or bad machine-id.
        """
        from locksmithd.host.identity import read_holder_id

        if given is None:
            _require_regular_file(self.machine_id_file)
            return read_holder_id(self.machine_id_file, self.holder_id_mode)
        problem = name_problem(given)
        if problem is not None:
            raise InvalidName(f"{value_problem('ID', given, problem)}{hint}")
        return given


def _require_regular_file(path: str) -> None:
    """Refuse a machine-id path naming a FIFO or device: reading one could block or never end."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # read_machine_id reports a missing or unreadable file with the reason
    if not stat.S_ISREG(mode):
        raise IdentityError(path, "machine-id", "", "not a regular file")


def value_problem(option: str, value: str, problem: str) -> str:
    """An error text naming ``option``; the value is echoed bounded and escaped, never when not UTF-8."""
    if is_not_utf8(value):
        return f"{option} is not valid UTF-8"
    return f"{option} {shown_value(value)}: {problem}"


def is_not_utf8(value: str) -> bool:
    """True when ``value`` carries bytes that were not UTF-8 (Python's surrogate escapes)."""
    return any("\ud800" <= char <= "\udfff" for char in value)


def parse_count(option: str, text: str) -> int:
    """``text`` as a slot count: plain ASCII digits, 0 to MAX_SLOTS; else UsageError naming ``option``.

    Checked before etcd is contacted, so a typo never waits for a timeout.
    Refuses signs, spaces, underscores and non-ASCII digits that int() accepts.
    """
    if not _DIGITS.fullmatch(text):
        raise UsageError(value_problem(option, text, f"must be a whole number from 0 to {MAX_SLOTS} (digits 0-9 only)"))
    significant = text.lstrip("0") or "0"
    if len(significant) > len(str(MAX_SLOTS)) or int(significant) > MAX_SLOTS:
        raise UsageError(value_problem(option, text, f"must be from 0 to {MAX_SLOTS}"))
    return int(significant)


def fail(error: LocksmithError) -> NoReturn:
    """Print ``error`` as one escaped stderr line and exit with its code (the one place that exits).

    The line is cut at MAX_ERROR_LINE_CHARS: messages echo values bounded, but a
    message naming a huge setting (a 10 KB bus address) must not flood the terminal.
    """
    click.echo(f"locksmithctl: {printable(error.one_line(), MAX_ERROR_LINE_CHARS)}", err=True)
    sys.exit(int(error.exit_code))


def handled(func: F) -> F:
    """Turn LocksmithError raised by a command into one stderr line and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LocksmithError as error:
            fail(error)

    return wrapper  # type: ignore[return-value]


def group_label(group: str) -> str:
    """How messages name a (validated, so printable) group."""
    return f"group {group!r}" if group else "the default group"
