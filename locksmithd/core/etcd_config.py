"""The etcd connection config (endpoints, TLS files, credentials, key prefix, timeout) and its pure parsing.

The defaults operators see are the settings rows' (``settings/table.py``); the checks that read files
(TLS, credentials) are ``settings/etcd_checks.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from locksmithd.core.names import name_problem
from locksmithd.errors import ConfigError

DEFAULT_PORT = 2379
"""etcd's client port, used when an endpoint URL names none."""
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


@dataclass(frozen=True, kw_only=True)
class EtcdSettings:
    """Everything needed to open an etcd client; built once, never mutated.

    The endpoints and the request timeout have no default here: the one
    declaration of each default is its settings row (``settings/table.py``),
    which the daemon and the tools parse. ``key_prefix`` is prepended to
    locksmith's key names as is (default: none) so several tenants can share
    one etcd; a non-empty prefix ends in "/" (``settings.etcd_checks``
    checks it). ``password`` is excluded from repr so it never reaches a log line.
    """

    endpoints: tuple[Endpoint, ...]
    request_timeout_s: float
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    key_prefix: str = ""

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


