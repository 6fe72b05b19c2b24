"""The etcd edge's connection config, as the edge's modules import it: its home is core/etcd_config.py.

The checks that read TLS and credential files run while settings are loaded (``settings/etcd_checks.py``).
"""

from __future__ import annotations

from locksmithd.core.etcd_config import (
    DEFAULT_PORT,
    Endpoint,
    EtcdSettings,
    parse_endpoint,
    parse_endpoints,
    request_timeout_problem,
    without_password,
)

__all__ = ["DEFAULT_PORT", "Endpoint", "EtcdSettings", "parse_endpoint", "parse_endpoints",
           "request_timeout_problem", "without_password"]
