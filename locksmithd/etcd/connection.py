"""The etcd connection config (endpoints, TLS, credentials, key prefix, timeout) and its parsing and checks."""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from locksmithd.core.names import name_problem
from locksmithd.errors import ConfigError

DEFAULT_PORT = 2379
DEFAULT_ENDPOINT = f"http://127.0.0.1:{DEFAULT_PORT}"
DEFAULT_REQUEST_TIMEOUT_S = 5.0
MIN_REQUEST_TIMEOUT_S = 0.1
MAX_REQUEST_TIMEOUT_S = 300.0
MAX_TLS_FILE_BYTES = 4 * 1024 * 1024
"""Largest CA bundle, certificate or key file read (a system CA bundle is about 200 KB)."""


def request_timeout_problem(seconds: float) -> str | None:
    """Why ``seconds`` is not a usable per-request etcd timeout, or None when it is.

    The one bound shared by locksmithd and locksmithctl: a finite number from
    0.1 s to 5 minutes (NaN, infinity and absurd values would make every
    request look like an unavailable etcd).
    """
    if not MIN_REQUEST_TIMEOUT_S <= seconds <= MAX_REQUEST_TIMEOUT_S:  # also False for NaN
        return f"must be between {MIN_REQUEST_TIMEOUT_S:g}s and {MAX_REQUEST_TIMEOUT_S:g}s"
    return None


@dataclass(frozen=True)
class Endpoint:
    """One etcd client URL, split into what the gRPC channel needs."""

    scheme: str
    host: str
    port: int

    @property
    def url_host(self) -> str:
        """The host as written in a URL or gRPC target: an IPv6 literal in brackets."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.url_host}:{self.port}"

    @property
    def secure(self) -> bool:
        return self.scheme == "https"


@dataclass(frozen=True)
class EtcdSettings:
    """Everything needed to open an etcd client; built once, never mutated.

    ``key_prefix`` is prepended to locksmith's key names as is (default: none)
    so several tenants can share one etcd; a non-empty prefix ends in "/"
    (``validate_tls_and_auth`` checks it). ``password`` is excluded from repr
    so it never reaches a log line.
    """

    endpoints: tuple[Endpoint, ...] = (Endpoint("http", "127.0.0.1", DEFAULT_PORT),)  # DEFAULT_ENDPOINT
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    key_prefix: str = ""
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S

    def describe_endpoints(self) -> str:
        return ",".join(ep.url for ep in self.endpoints)


def parse_endpoint(text: str, source: str, key: str) -> Endpoint:
    """Parse one ``http(s)://host:port`` URL; raise ConfigError naming source and key.

    An IPv6 literal host is written in brackets (``http://[::1]:2379``). A URL
    with user info (``http://user:pw@host``) is refused, and the error shows
    it with the password replaced, never the password itself.
    """
    raw = text.strip()
    shown = without_password(raw)
    if "@" in raw:  # before parsing: urllib's own errors would quote the password
        raise ConfigError(source, key, shown, "credentials in an endpoint URL are not used; "
                                              "set the etcd username and password settings instead")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(source, key, shown, f"not a valid URL ({exc})") from exc
    if parts.scheme not in ("http", "https"):
        raise ConfigError(source, key, shown, "endpoint must start with http:// or https://")
    if not parts.hostname:
        raise ConfigError(source, key, shown, "endpoint has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(source, key, shown, "endpoint must be scheme://host:port with no path")
    problem = name_problem(parts.hostname, "endpoint host")
    if problem:
        raise ConfigError(source, key, shown, problem)
    if port is None:
        port = DEFAULT_PORT
    return Endpoint(parts.scheme, parts.hostname, port)


def without_password(url: str) -> str:
    """``url`` with everything after the user name in its user info replaced by "***" (for errors).

    Cautious on purpose: the user info runs to the last "@", so a password
    holding "/" or "@" is hidden too.
    """
    start = url.find("//") + 2 if "//" in url else 0
    at = url.rfind("@")
    if at < start:
        return url
    user = url[start:at].split(":", 1)[0]
    return f"{url[:start]}{user}:***{url[at:]}"


def parse_endpoints(values: list[str] | tuple[str, ...] | str, source: str, key: str) -> tuple[Endpoint, ...]:
    """Parse repeated and/or comma-separated endpoint URLs, keeping order, dropping repeats."""
    items = [values] if isinstance(values, str) else list(values)
    found: list[Endpoint] = []
    for item in items:
        for piece in item.split(","):
            if not piece.strip():
                continue
            endpoint = parse_endpoint(piece, source, key)
            if endpoint not in found:
                found.append(endpoint)
    if not found:
        raise ConfigError(source, key, ",".join(items), "no endpoint given")
    return tuple(found)


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
        raise ConfigError(source, key, path, f"is not a regular file ({_file_type(info.st_mode)})")
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


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


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
