"""D-Bus service decorators and signature types that work with dbus-fast 1.84 (Debian bookworm) and 5.x.

dbus-fast 4 added ``dbus_fast.annotations`` (``Annotated[..., DBusSignature]``
types) and renamed the decorators ``method``/``signal`` to ``dbus_method``/
``dbus_signal``; 1.84 only reads signature strings. The fakes write their
signatures once with the types below; each decorator here turns them into the
plain signature strings both releases accept before dbus-fast inspects the
function. Only the harness and tests publish D-Bus services; the daemon is a
client and needs none of this.
"""

# No ``from __future__ import annotations`` here: the decorators read real annotation objects.

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from dbus_fast import PropertyAccess
from dbus_fast import service as _service

__all__ = ["DBusBool", "DBusInt32", "DBusObjectPath", "DBusSignature", "DBusStr", "DBusUInt64",
           "dbus_method", "dbus_property", "dbus_signal"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class DBusSignature:
    """A D-Bus signature carried in ``Annotated[...]`` (dbus-fast 4's own class, for every release)."""

    signature: str


DBusBool = Annotated[bool, DBusSignature("b")]
DBusInt32 = Annotated[int, DBusSignature("i")]
DBusUInt64 = Annotated[int, DBusSignature("t")]
DBusStr = Annotated[str, DBusSignature("s")]
DBusObjectPath = Annotated[str, DBusSignature("o")]

_method: Callable[..., Any] = getattr(_service, "dbus_method", None) or getattr(_service, "method")
_signal: Callable[..., Any] = getattr(_service, "dbus_signal", None) or getattr(_service, "signal")


def signature_strings(fn: F) -> F:
    """``fn`` with each ``Annotated[..., DBusSignature(s)]`` annotation replaced by the string ``s``."""
    plain: dict[str, Any] = {}
    for name, annotation in fn.__annotations__.items():
        metadata = getattr(annotation, "__metadata__", None)  # set on Annotated[...] only
        if metadata is not None:
            signatures = [arg.signature for arg in metadata if isinstance(arg, DBusSignature)]
            if len(signatures) != 1:
                raise TypeError(f"{fn.__qualname__}: {name} needs exactly one DBusSignature")
            annotation = signatures[0]
        plain[name] = annotation
    fn.__annotations__ = plain
    return fn


def dbus_method(name: str | None = None, disabled: bool = False) -> Callable[[F], F]:
    """``dbus_fast.service.dbus_method`` (``method`` before dbus-fast 4), with signature types."""
    decorate = _method(name=name, disabled=disabled)
    return lambda fn: decorate(signature_strings(fn))


def dbus_signal(name: str | None = None, disabled: bool = False) -> Callable[[F], F]:
    """``dbus_fast.service.dbus_signal`` (``signal`` before dbus-fast 4), with signature types."""
    decorate = _signal(name=name, disabled=disabled)
    return lambda fn: decorate(signature_strings(fn))


def dbus_property(access: PropertyAccess = PropertyAccess.READWRITE, name: str | None = None,
                  disabled: bool = False) -> Callable[[Callable[..., Any]], Any]:
    """``dbus_fast.service.dbus_property``, with signature types."""
    decorate = _service.dbus_property(access=access, name=name, disabled=disabled)
    return lambda fn: decorate(signature_strings(fn))
