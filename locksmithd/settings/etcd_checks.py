"""The etcd connection checks that read files: TLS files readable and parsing, credentials, key prefix.

Run while settings are loaded (the daemon's rows, the tools' etcd options), so a bad file is a
configuration error naming its key, never "etcd unavailable" later.
"""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Mapping

from locksmithd.core.etcd_config import EtcdSettings
from locksmithd.core.file_kinds import file_kind
from locksmithd.core.names import name_problem
from locksmithd.errors import ConfigError

MAX_TLS_FILE_BYTES = 4 * 1024 * 1024
"""Largest CA bundle, certificate or key file read (a system CA bundle is about 200 KB)."""


def check_readable_file(path: str | None, source: str, key: str) -> str | None:
    """Return ``path`` if it names a readable, non-empty regular file (or is unset), else raise ConfigError.

    The problem says what the path is ("is a directory", "is not a regular
    file (a FIFO)", "is empty", "does not exist"). Only regular files are
    opened, so a FIFO or a device never blocks or floods start-up.
    """
    if path is None or path == "":
        return None
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise ConfigError(source, key, path, "file does not exist") from exc
    except OSError as exc:
        raise ConfigError(source, key, path, f"cannot look at the file ({exc.strerror})") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(source, key, path, "is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(source, key, path, f"is not a regular file ({file_kind(info.st_mode)})")
    if info.st_size == 0:
        raise ConfigError(source, key, path, "file is empty")
    if info.st_size > MAX_TLS_FILE_BYTES:
        raise ConfigError(source, key, path, f"file is larger than {MAX_TLS_FILE_BYTES // (1024 * 1024)} MiB")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(source, key, path, f"file is not readable ({exc.strerror})") from exc
    return path


def validate_tls_and_auth(settings: EtcdSettings, source: str, keys: Mapping[str, str]) -> EtcdSettings:
    """Check the TLS files, credentials and key prefix of ``settings`` fit together.

    A CA file alone is valid (server-authenticated TLS). A client certificate
    needs its key and the other way round; a username needs a password. TLS
    files with a plain-http endpoint are refused (they would be ignored and
    the traffic sent in clear). Each file must be a readable regular file
    and parse: the CA file as PEM certificates, the certificate and key as a
    matching unencrypted pair. Raises ConfigError naming the key: ``keys`` maps
    each field (``cafile``, ``certfile``, ``keyfile``, ``username``, ``password``,
    ``key_prefix``) to the setting key that gave it, as the caller spells it.
    """
    for name, path in (("cafile", settings.cafile), ("certfile", settings.certfile), ("keyfile", settings.keyfile)):
        check_readable_file(path, source, keys[name])
    if bool(settings.certfile) != bool(settings.keyfile):
        key = keys["keyfile"] if settings.certfile else keys["certfile"]
        raise ConfigError(source, key, "", "a client certificate and its key must be given together")
    if (settings.certfile or any(ep.secure for ep in settings.endpoints)) and not settings.cafile:
        raise ConfigError(source, keys["cafile"], "", "https endpoints and client certificates need a CA file")
    if bool(settings.username) != bool(settings.password):
        key = keys["password"] if settings.username else keys["username"]
        raise ConfigError(source, key, "", "a username and a password must be given together")
    plain = [ep.url for ep in settings.endpoints if not ep.secure]
    if settings.cafile and plain:
        raise ConfigError(source, keys["cafile"], settings.cafile,
                          f"TLS files are set but endpoint {plain[0]} is plain http, where they would be ignored "
                          "and the traffic sent in clear; refused: use https:// endpoints or unset the TLS files")
    _check_tls_contents(settings, source, keys)
    _check_credentials(settings, source, keys)
    _check_key_prefix(settings.key_prefix, source, keys["key_prefix"])
    return settings


def _check_tls_contents(settings: EtcdSettings, source: str, keys: Mapping[str, str]) -> None:
    """Parse the TLS files as gRPC will, so a bad one is a configuration error, not "etcd unavailable"."""
    if settings.cafile:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=settings.cafile)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(source, keys["cafile"], settings.cafile,
                              f"holds no PEM certificate ({_ssl_reason(exc)})") from exc
    if not (settings.certfile and settings.keyfile):
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=settings.certfile)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(source, keys["certfile"], settings.certfile,
                          f"holds no PEM certificate ({_ssl_reason(exc)})") from exc
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(settings.certfile, settings.keyfile,
                                                                password=_refuse_encrypted_key)
    except _EncryptedKey as exc:
        raise ConfigError(source, keys["keyfile"], settings.keyfile,
                          "key is encrypted; etcd's client needs an unencrypted key") from exc
    except (ssl.SSLError, OSError, ValueError) as exc:
        problem = (f"does not match the certificate in {settings.certfile}"
                   if "KEY_VALUES_MISMATCH" in str(exc) else f"holds no PEM private key ({_ssl_reason(exc)})")
        raise ConfigError(source, keys["keyfile"], settings.keyfile, problem) from exc


class _EncryptedKey(Exception):
    """Internal: the key file asked for a password."""


def _refuse_encrypted_key() -> bytes:
    raise _EncryptedKey()  # never prompt on the terminal (OpenSSL's default)


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason).lower().replace("_", " ") if reason else str(exc) or type(exc).__name__


def _check_credentials(settings: EtcdSettings, source: str, keys: Mapping[str, str]) -> None:
    if settings.username and any(not c.isprintable() and c != " " for c in settings.username):
        broken = any(0xD800 <= ord(c) <= 0xDFFF for c in settings.username)
        raise ConfigError(source, keys["username"], settings.username,
                          "username is not valid UTF-8" if broken else "username contains a control character")
    if settings.password and any(not c.isprintable() and c != " " for c in settings.password):
        raise ConfigError(source, keys["password"], "(not shown)",
                          "password is not valid UTF-8 or contains control characters")


def _check_key_prefix(key_prefix: str, source: str, key: str) -> None:
    """A non-empty prefix must end in "/": it is prepended as is, and "/other" would give "/othercoreos.com"."""
    if key_prefix == "":
        return
    problem = name_problem(key_prefix, "key prefix")
    if problem:
        raise ConfigError(source, key, key_prefix, problem)
    if not key_prefix.endswith("/"):
        raise ConfigError(source, key, key_prefix, f'a key prefix must end in "/" (e.g. {key_prefix + "/"!r}): '
                                                    "it is prepended to locksmith's key names as is")
