"""Reading etcd's Prometheus /metrics: parsing and counting gRPC requests."""

from __future__ import annotations

from typing import Mapping


def parse_prometheus(text: str) -> dict[str, float]:
    """Parse Prometheus text exposition into ``{"name{labels}": value}``; comments skipped."""
    series: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        end = line.rfind("}") + 1 if "{" in line else line.find(" ")
        key, rest = line[:end], line[end:].split()
        if rest:
            series[key] = float(rest[0])
    return series


def grpc_requests_total(metrics: dict[str, float], service: str | None = None) -> float:
    """Sum ``grpc_server_started_total`` over methods (optionally one gRPC ``service``).

    "started" counts every RPC when it arrives, unary calls and stream opens
    alike, including ones that later fail or hang; "handled" would miss calls
    still in flight. /health checks do not go through gRPC and are not counted.
    """
    total = 0.0
    for key, value in metrics.items():
        if key.startswith("grpc_server_started_total") and (
                service is None or f'grpc_service="{service}"' in key):
            total += value
    return total


def requests_by_method(before: Mapping[str, float], after: Mapping[str, float],
                       metric: str = "grpc_server_started_total") -> dict[str, float]:
    """Per gRPC method (``Service/Method``), how much ``metric`` grew between two scrapes."""
    grown: dict[str, float] = {}
    for key, value in after.items():
        if not key.startswith(metric + "{"):
            continue
        delta = value - before.get(key, 0.0)
        if delta:
            labels = dict(part.split("=", 1) for part in key[len(metric) + 1:-1].split(","))
            name = f"{labels['grpc_service'].strip(chr(34)).split('.')[-1]}/{labels['grpc_method'].strip(chr(34))}"
            grown[name] = grown.get(name, 0.0) + delta
    return grown
