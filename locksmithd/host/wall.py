"""Wall-style notices to logged-in users' terminals before a reboot."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("locksmithd.wall")


def reboot_notice(hostname: str, delay_s: float) -> str:
    """The text users see; says when and why the host reboots."""
    minutes = delay_s / 60
    when = f"in {minutes:g} minute{'s' if minutes != 1 else ''}" if delay_s > 0 else "now"
    return (f"\r\nBroadcast message from locksmithd on {hostname}:\r\n\r\n"
            f"The system will reboot {when} to finish an update. Please save your work.\r\n")


def write_to_terminals(ttys: list[str], message: str, dev_root: str = "/dev") -> list[str]:
    """Write ``message`` to each tty under ``dev_root``; returns those written.

    A tty name with ``..`` or an absolute path is refused; a terminal that
    cannot be opened is logged and skipped (never blocks: O_NONBLOCK).
    """
    written = []
    for tty in ttys:
        if tty.startswith("/") or ".." in tty.split("/"):
            log.warning("refusing odd tty name %r from logind", tty)
            continue
        path = os.path.join(dev_root, tty)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_APPEND)
        except OSError as exc:
            log.info("cannot write reboot notice to %s: %s", path, exc.strerror)
            continue
        try:
            os.write(fd, message.encode())
            written.append(tty)
        except OSError as exc:
            log.info("cannot write reboot notice to %s: %s", path, exc.strerror)
        finally:
            os.close(fd)
    return written
