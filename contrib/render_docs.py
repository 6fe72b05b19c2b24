"""Render the man pages (contrib/man/) and the packaged locksmithd.conf from the commands and settings table.

    .venv/bin/python contrib/render_docs.py           # rewrite the files
    .venv/bin/python contrib/render_docs.py --check   # exit 1 naming each file that differs

The renderers are locksmithd/settings/manpage.py; this script only composes them with the three
click commands and the pages' prose. tests/test_rendered_docs.py runs the same check.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from locksmithd import __version__  # noqa: E402
from locksmithd.ctl.main import cli as ctl_cli  # noqa: E402
from locksmithd.daemon.main import cli as daemon_cli  # noqa: E402
from locksmithd.fleetlock.main import cli as fleetlock_cli  # noqa: E402
from locksmithd.settings.manpage import Page, command_page, conffile_text, settings_page  # noqa: E402

CONF_FILES = """\
`/usr/share/coreos/update.conf`, `/etc/coreos/update.conf`, `/usr/share/flatcar/update.conf`,
`/etc/flatcar/update.conf` and `/etc/locksmithd/locksmithd.conf` are read in this order, then the
environment, then the command-line flags: a later source wins. Any file may be absent.
`--conf PATH` (repeatable) reads the named files instead, and each must exist.
"""

DAEMON = Page("locksmithd", 8, "coordinate this host's reboots through an etcd semaphore or a FleetLock server", (
    ("Configuration", CONF_FILES + "\n\nEvery setting, its flag and default: "
                                   "locksmithd.conf(5). Settings are read once, at start."),
    ("Without etcd", """\
With no etcd reachable (the default endpoint `http://127.0.0.1:2379` on a host without etcd), the
daemon starts and reports ready, logs once that etcd is unreachable, and retries with a growing
pause (at most `LOCKSMITHD_RETRY_MAX`); it never reboots without a slot. Set
`LOCKSMITHD_ENDPOINT` in /etc/locksmithd/locksmithd.conf, then `systemctl restart locksmithd`."""),
    ("Files", """\
  /etc/locksmithd/locksmithd.conf     settings (locksmithd.conf(5))
  /etc/locksmithd/health.d/           health checks run after boot
  /etc/locksmithd/pre-reboot.d/       hooks run before a reboot (e.g. drain)
  /etc/locksmithd/post-boot.d/        hooks run after boot (e.g. uncordon)
  /run/update-engine/coordinator.conf the coordinator state (STATE=, DAEMON_STATE=)
  /lib/systemd/system/locksmithd.service           the unit (root)
  /lib/systemd/system/locksmithd-unprivileged.service  the unit (user locksmithd)"""),
    ("See also", "locksmithctl(1), locksmithd-fleetlock(8), locksmithd.conf(5), systemctl(1), "
                 "/usr/share/doc/locksmithd/README.md.gz"),
))

CTL = Page("locksmithctl", 1, "inspect and manage locksmithd's reboot semaphore in etcd", (
    ("See also", "locksmithd(8), locksmithd-fleetlock(8), locksmithd.conf(5)"),
))

FLEETLOCK = Page("locksmithd-fleetlock", 8, "FleetLock server on locksmithd's etcd semaphore", (
    ("Files", """\
  /etc/locksmithd/fleetlock.env       LOCKSMITHD_FLEETLOCK_* settings (EnvironmentFile= of the unit)
  /lib/systemd/system/locksmithd-fleetlock.service  the unit (installed disabled)"""),
    ("See also", "locksmithd(8), locksmithctl(1), /usr/share/doc/locksmithd/examples/fleetlock/"),
))

CONF = Page("locksmithd.conf", 5, "settings of the locksmithd reboot coordinator", (
    ("Description", CONF_FILES + """

Lines are `KEY=value`, as systemd's `EnvironmentFile=` reads them: blank lines and lines starting
with `#` or `;` are skipped, an `export` prefix is allowed, values may be quoted; nothing is
expanded. The file must be a regular file of at most 1 MiB of UTF-8 text. A value locksmithd
cannot use, or a malformed line, stops the daemon with exit status 3 and one line naming the
file, line and key; an unknown `LOCKSMITHD_` key is logged and ignored, other keys are ignored
(update.conf also holds update_engine's). The packaged file lists every setting commented out
with its default."""),
    ("See also", "locksmithd(8), locksmithctl(1)"),
))


def rendered() -> dict[Path, str]:
    """Each committed file and the text it must hold."""
    man = ROOT / "contrib" / "man"
    return {
        man / "locksmithd.8": command_page(daemon_cli, DAEMON, __version__),
        man / "locksmithctl.1": command_page(ctl_cli, CTL, __version__),
        man / "locksmithd-fleetlock.8": command_page(fleetlock_cli, FLEETLOCK, __version__),
        man / "locksmithd.conf.5": settings_page(CONF, __version__),
        ROOT / "contrib" / "locksmithd.conf": conffile_text(),
    }


def main(argv: list[str]) -> int:
    stale = [path for path, text in rendered().items() if not path.exists() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"render_docs: {path.relative_to(ROOT)} differs from its rendering; "
                  "run contrib/render_docs.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
