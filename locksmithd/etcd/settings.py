"""Validated settings for reaching etcd, shared by locksmithd and locksmithctl."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from locksmithd.errors import ConfigError

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
DEFAULT_REQUEST_TIMEOUT_S = 5.0
MIN_REQUEST_TIMEOUT_S = 0.1
MAX_REQUEST_TIMEOUT_S = 300.0


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

    ``key_prefix`` is prepended to locksmith's key names (default: none) so
    several tenants can share one etcd. ``password`` is excluded from repr so it
    never reaches a log line.
    """

    endpoints: tuple[Endpoint, ...] = (Endpoint("http", "127.0.0.1", 2379),)
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
    """Parse one ``http(s)://host:port`` URL; raise ConfigError naming source and key."""
    raw = text.strip()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(source, key, text, f"not a valid URL ({exc})") from exc
    if parts.scheme not in ("http", "https"):
        raise ConfigError(source, key, text, "endpoint must start with http:// or https://")
    if not parts.hostname:
        raise ConfigError(source, key, text, "endpoint has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(source, key, text, "endpoint must be scheme://host:port with no path")
    if port is None:
        port = 2379
    return Endpoint(parts.scheme, parts.hostname, port)


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
    """Return ``path`` if it names a readable regular file (or is unset), else raise ConfigError."""
    if path is None or path == "":
        return None
    if not os.path.isfile(path):
        raise ConfigError(source, key, path, "file does not exist")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(source, key, path, f"file is not readable ({exc.strerror})") from exc
    return path


def validate_tls_and_auth(settings: EtcdSettings, source: str, prefix: str) -> EtcdSettings:
    """Check the TLS files and credentials of ``settings`` fit together.

    A CA file alone is valid (server-authenticated TLS). A client certificate
    needs its key and the other way round; a username needs a password.
    """
    check_readable_file(settings.cafile, source, f"{prefix}ETCD_CAFILE")
    check_readable_file(settings.certfile, source, f"{prefix}ETCD_CERTFILE")
    check_readable_file(settings.keyfile, source, f"{prefix}ETCD_KEYFILE")
    if bool(settings.certfile) != bool(settings.keyfile):
        key = f"{prefix}ETCD_KEYFILE" if settings.certfile else f"{prefix}ETCD_CERTFILE"
        raise ConfigError(source, key, "", "a client certificate and its key must be given together")
    if (settings.certfile or any(ep.secure for ep in settings.endpoints)) and not settings.cafile:
        raise ConfigError(source, f"{prefix}ETCD_CAFILE", "", "https endpoints and client certificates need a CA file")
    if bool(settings.username) != bool(settings.password):
        key = f"{prefix}ETCD_PASSWORD" if settings.username else f"{prefix}ETCD_USERNAME"
        raise ConfigError(source, key, "", "a username and a password must be given together")
    return settings
