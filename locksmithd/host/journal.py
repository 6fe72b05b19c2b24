"""Logging to journald when its socket exists, else stderr; sd_notify when NOTIFY_SOCKET is set."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from locksmithd.core.names import printable

JOURNAL_SOCKET = "/run/systemd/journal/socket"


def setup_logging(debug: bool, journal_stream: str | None = None, journal_socket: str = JOURNAL_SOCKET, *,
                  fields: logging.Filter | None = None, sender: Callable[..., None] | None = None) -> bool:
    """Route the ``locksmithd`` loggers to journald when systemd gave us the journal, else to stderr.

    ``journal_stream`` is systemd's JOURNAL_STREAM (set when our stderr is the
    journal); a daemon started by hand or by tests keeps logging to stderr even
    on a host that runs journald. ``fields`` (a filter adding LOCKSMITHD_*
    attributes, see journal_events.py) goes on the handler; ``sender``
    replaces ``systemd.journal.send`` (tests). Returns True when logging goes
    to journald.
    """
    level = logging.DEBUG if debug else logging.INFO
    handler: logging.Handler
    use_journal = bool(journal_stream) and os.path.exists(journal_socket)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("locksmithd[%(process)d]: %(levelname)s %(message)s"))
    journal = False
    if use_journal:
        try:
            from systemd.journal import JournalHandler, send

            handler = JournalHandler(SYSLOG_IDENTIFIER="locksmithd", sender_function=sender or send)
            handler.setFormatter(logging.Formatter("%(message)s"))
            journal = True
        except ImportError:
            pass
    handler.addFilter(OneLine())
    if fields is not None:
        handler.addFilter(fields)
    root = logging.getLogger("locksmithd")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    return journal


class OneLine(logging.Filter):
    """Every log message as one line: control characters escaped (``printable``), whatever text it carries.

    Log lines quote outside text (halt reasons and holder records from etcd,
    check names and output, D-Bus replies); escaping here, once for every
    line, means none of it can add lines or send terminal sequences, even
    where a call site forgot. A traceback (``exc_info``) is ours and stays.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.isprintable():
            record.msg, record.args = printable(message), None
        return True


class Notifier:
    """sd_notify(3) when systemd gave us NOTIFY_SOCKET; a no-op otherwise."""

    def __init__(self, notify_socket: str | None) -> None:
        self._enabled = bool(notify_socket)

    def send(self, **fields: str) -> None:
        """Send e.g. READY="1", STATUS="waiting-for-lock"; failures are ignored."""
        if not self._enabled:
            return
        # A value is one line: a newline in outside text must not add a field (READY=1, MAINPID=).
        message = "\n".join(f"{k}={printable(v)}" for k, v in fields.items())
        try:
            from systemd.daemon import notify

            notify(message)
        except (ImportError, OSError):
            pass


def quiet_grpc() -> None:
    """Keep gRPC's C core from printing to stderr (errors reach us as exceptions).

    Called by the entry points before grpc is imported; ``--debug`` or an
    explicit GRPC_VERBOSITY in the environment keeps its output.
    """
    if "--debug" not in sys.argv[1:]:
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
