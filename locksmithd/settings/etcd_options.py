"""The etcd connection options, declared once: the daemon's rows, rendered as the tools' click options.

locksmithd reads the rows of ``table`` (``LOCKSMITHD_*``); locksmithctl and
locksmithd-fleetlock get the same options from ``etcd_click_options`` under
their own prefix (``LOCKSMITHCTL_*``, ``LOCKSMITHD_FLEETLOCK_*``), with the
table's flags and defaults and a short help of their own. The password file is
the daemon's only (the tools read the password from their environment).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from locksmithd.core.etcd_config import EtcdSettings, parse_endpoints
from locksmithd.settings.etcd_checks import validate_tls_and_auth
from locksmithd.settings.table import (
    CAFILE,
    CERTFILE,
    ENDPOINT,
    ETCD_TIMEOUT,
    KEY_PREFIX,
    KEYFILE,
    PASSWORD,
    USERNAME,
    Setting,
)

F = TypeVar("F", bound=Callable[..., Any])
DAEMON_PREFIX = "LOCKSMITHD_"


@dataclass(frozen=True)
class EtcdOption:
    """One etcd connection setting: its daemon row and the short help the tools show for it."""

    row: Setting[object]
    tool_help: str

    @property
    def field(self) -> str:
        """The EtcdSettings field the row fills."""
        assert self.row.field is not None and self.row.field.startswith("etcd.")
        return self.row.field.removeprefix("etcd.")

    @property
    def param(self) -> str:
        """The click parameter name ("endpoints" for the repeatable --endpoint)."""
        assert self.row.flag is not None
        return "endpoints" if self.row is ENDPOINT else self.row.flag.removeprefix("--").replace("-", "_")

    def key(self, prefix: str) -> str:
        """The row's key under a program's prefix (``LOCKSMITHCTL_ETCD_CAFILE``)."""
        return prefix + self.row.key.removeprefix(DAEMON_PREFIX)


ETCD_OPTIONS: tuple[EtcdOption, ...] = (
    EtcdOption(ENDPOINT, "etcd endpoint; repeat or comma-separate"),
    EtcdOption(CAFILE, "CA certificate for etcd TLS"),
    EtcdOption(CERTFILE, "client certificate for etcd TLS"),
    EtcdOption(KEYFILE, "client key for etcd TLS"),
    EtcdOption(USERNAME, "etcd user name"),
    EtcdOption(PASSWORD, "etcd password (prefer the env variable)"),
    EtcdOption(KEY_PREFIX, "prefix before locksmith's key names (multi-tenant etcd)"),
    EtcdOption(ETCD_TIMEOUT, "seconds per etcd request, 0.1 to 300"),
)
assert all(option.row.key.startswith(DAEMON_PREFIX) for option in ETCD_OPTIONS)


def etcd_keys(prefix: str) -> Mapping[str, str]:
    """Each EtcdSettings field's key under ``prefix``, for the errors of ``validate_tls_and_auth``."""
    return {option.field: option.key(prefix) for option in ETCD_OPTIONS}


def _timeout_default() -> float:
    value = ETCD_TIMEOUT.default_value()
    assert isinstance(value, float)
    return value


def etcd_click_options(prefix: str) -> Callable[[F], F]:
    """A decorator adding the etcd options, each read from ``prefix`` + its key's tail, in table order."""

    def decorate(func: F) -> F:
        for option in reversed(ETCD_OPTIONS):
            flag, envvar, text = option.row.flag, option.key(prefix), option.tool_help
            assert flag is not None
            if option.row is ENDPOINT:
                func = click.option(flag, option.param, multiple=True, envvar=envvar, metavar="URL",
                                    help=f"{text} [default: {ENDPOINT.default}]")(func)
            elif option.row is ETCD_TIMEOUT:
                func = click.option(flag, option.param, default=_timeout_default(), type=float, envvar=envvar,
                                    help=f"{text} [default: {_timeout_default():g}]")(func)
            else:
                func = click.option(flag, option.param, default=option.row.default, envvar=envvar,
                                    help=text)(func)
        return func

    return decorate


def etcd_settings_from(params: Mapping[str, Any], source: str, prefix: str) -> EtcdSettings:
    """The checked EtcdSettings from the values of ``etcd_click_options``; ConfigError naming the key."""
    keys = etcd_keys(prefix)
    default = ENDPOINT.default
    assert default is not None
    endpoints = parse_endpoints(params["endpoints"] or (default,), source, keys["endpoints"])
    given = {option.field: params[option.param] or None for option in ETCD_OPTIONS
             if option.row not in (ENDPOINT, ETCD_TIMEOUT, KEY_PREFIX)}
    return validate_tls_and_auth(EtcdSettings(endpoints=endpoints, key_prefix=params["etcd_key_prefix"] or "",
                                              request_timeout_s=params["etcd_timeout"], **given), source, keys)
