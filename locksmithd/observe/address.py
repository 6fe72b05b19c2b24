"""Where the metrics endpoint listens: ``host:port`` (TCP) or ``unix:/path`` (a socket file)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricsAddress:
    """A TCP ``host`` and ``port``, or a unix socket ``path`` (then host is "" and port 0)."""

    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_metrics_address(text: str) -> MetricsAddress:
    """``127.0.0.1:9474``, ``[::1]:9474``, ``:9474`` (every address) or ``unix:/run/x.sock``.

    Raises ValueError naming the problem (a URL, no port, port out of range,
    a relative socket path).
    """
    if "://" in text:
        raise ValueError("a URL is not a listening address: write host:port (e.g. 127.0.0.1:9474) "
                         "or unix:/path, without a scheme")
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if not path.startswith("/"):
            raise ValueError("a unix socket path must be absolute, e.g. unix:/run/locksmithd/metrics.sock")
        return MetricsAddress(path=path)
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isascii() or not port_text.isdigit():
        raise ValueError("expected host:port (e.g. 127.0.0.1:9474) or unix:/path")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError("the port must be from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("write an IPv6 address in brackets, e.g. [::1]:9474")
    if any(char.isspace() or char in "/[]" for char in host):
        raise ValueError("the host must be a name or an address")
    return MetricsAddress(host=host, port=port)
