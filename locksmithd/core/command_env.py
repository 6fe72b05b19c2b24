"""The environment every hook and check command gets: a clean one, never the daemon's credentials.

Pure: the settings loader builds it once from the daemon's environment (``DaemonSettings.command_env``)
and the runner (``host/commands.py``) passes it to each command.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

PASSED_VARIABLES = ("PATH", "LANG", "LANGUAGE", "TZ", "HOME", "USER", "LOGNAME", "TMPDIR", "KUBECONFIG",
                    "DBUS_SYSTEM_BUS_ADDRESS")
"""The daemon's variables a command gets (with ``LC_*``), when they are set."""
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "CREDENTIAL", "KEY")


def command_environment(environ: Mapping[str, str], private: Collection[str]) -> dict[str, str]:
    """The environment of every hook and check: a clean one, never the daemon's credentials.

    It holds ``PASSED_VARIABLES`` and ``LC_*`` (PATH defaults to
    ``DEFAULT_PATH``), and the ``LOCKSMITHD_*`` variables that are not the
    daemon's own settings (``private``: LOCKSMITHD_ETCD_PASSWORD and every
    other key the daemon reads) and whose name does not look like a secret:
    the hooks' own settings, as LOCKSMITHD_K8S_NODE. Hooks add their
    LOCKSMITHD_HOOK, _GROUP, _HOLDER_ID and _REBOOT_REASON.
    """
    env = {"PATH": DEFAULT_PATH}
    for name, value in environ.items():
        if name in PASSED_VARIABLES or name.startswith("LC_"):
            env[name] = value
        elif (name.startswith("LOCKSMITHD_") and name not in private
              and not any(word in name for word in _SECRET_WORDS)):
            env[name] = value
    return env
