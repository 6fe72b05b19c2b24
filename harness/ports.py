"""Free loopback TCP ports for test servers, picked outside the ephemeral range."""

from __future__ import annotations

import random
import socket
import threading

LOOPBACK = "127.0.0.1"

# Below Linux's default ephemeral range (32768-60999), so an outgoing connection
# cannot grab a port between our probe and the server's bind.
_PORT_RANGE = (20000, 32000)
_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port(host: str = LOOPBACK, rng: random.Random | None = None) -> int:
    """Return a TCP port on ``host`` that was bindable just now.

    Never returns the same port twice in one process, so members of one cluster
    cannot collide with each other. Another process may still take the port
    before the caller binds it; callers that launch servers retry on
    "address already in use". Raises ``RuntimeError`` if no port is found.
    """
    rng = rng or random.Random()
    with _lock:
        for _ in range(200):
            port = rng.randint(*_PORT_RANGE)
            if port in _handed_out or not _bindable(host, port):
                continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free TCP port on {host} in {_PORT_RANGE}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
