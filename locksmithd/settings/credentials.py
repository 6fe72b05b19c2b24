"""etcd credentials from files: LOCKSMITHD_ETCD_PASSWORD_FILE and systemd credentials ($CREDENTIALS_DIRECTORY).

With ``LoadCredential=etcd-password:/etc/locksmithd/etcd-password`` (and
``etcd-username``, ``etcd-ca.pem``, ``etcd-cert.pem``, ``etcd-key.pem``) in
the unit, the daemon reads them from ``$CREDENTIALS_DIRECTORY``: readable by
the service alone, never in the environment or on a command line. A value
given explicitly (flag, environment, file) wins over a credential.
"""

from __future__ import annotations

import os
from typing import Any

from locksmithd.errors import ConfigError
from locksmithd.settings.etcd_checks import check_readable_file
from locksmithd.settings.raw import RawSetting

MAX_SECRET_BYTES = 4096
# credential name -> EtcdSettings field; text credentials are read, file ones passed as paths.
TEXT_CREDENTIALS = {"etcd-password": "password", "etcd-username": "username"}
FILE_CREDENTIALS = {"etcd-ca.pem": "cafile", "etcd-cert.pem": "certfile", "etcd-key.pem": "keyfile"}


def read_secret_file(path: str, source: str, key: str) -> str:
    """The first line of ``path``: the secret, as documented; ConfigError naming ``key`` and the path.

    Blank lines after it (an editor's trailing newline or two) are ignored;
    another non-empty line is refused (which one would be meant?). The
    content never appears in an error: it is a secret.
    """
    check_readable_file(path, source, key)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(source, key, path, f"cannot read the file ({exc.strerror})") from exc
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(source, key, path, f"longer than {MAX_SECRET_BYTES} bytes")
    first, _, rest = data.partition(b"\n")
    text = first.removesuffix(b"\r")
    if not text or b"\x00" in text or rest.strip(b" \t\r\n"):
        raise ConfigError(source, key, path, "must hold one non-empty line (blank lines after it are ignored)")
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(source, key, path, "not valid UTF-8") from None


def apply_credential_files(fields: dict[str, Any], password_file: RawSetting | None,
                           password_given: RawSetting | None, credentials_dir: RawSetting | None) -> None:
    """Fill ``fields`` (EtcdSettings keyword arguments) from the password file and systemd credentials.

    Raises ConfigError when both a password and a password file are given,
    or when a file named cannot be used.
    """
    if password_file is not None and password_file.value:
        if password_given is not None and password_given.value:
            raise ConfigError(password_file.source, password_file.key, password_file.value,
                              "give the etcd password or a password file, not both")
        fields["password"] = read_secret_file(password_file.value, password_file.source, password_file.key)
    if credentials_dir is None or not credentials_dir.value:
        return
    for name, field in TEXT_CREDENTIALS.items():
        path = os.path.join(credentials_dir.value, name)
        if fields.get(field) is None and os.path.exists(path):
            fields[field] = read_secret_file(path, f"systemd credential {name}", credentials_dir.key)
    for name, field in FILE_CREDENTIALS.items():
        path = os.path.join(credentials_dir.value, name)
        if fields.get(field) is None and os.path.exists(path):
            fields[field] = check_readable_file(path, f"systemd credential {name}", credentials_dir.key)

