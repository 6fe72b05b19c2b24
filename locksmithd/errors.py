"""The one exception tree of locksmithd, with stable kinds and exit codes.

    LocksmithError                      kind "error"            exit 1
    ├── UsageError                      kind "usage"            exit 2
    │   └── InvalidName                 kind "invalid-name"     exit 2
    ├── ConfigError                     kind "config"           exit 3
    │   └── IdentityError               kind "identity"         exit 4
    ├── SemaphoreError                  kind "semaphore"        exit 1
    │   ├── SemaphoreFull               kind "full"             exit 5
    │   ├── NotHolder                   kind "not-holder"       exit 6
    │   ├── InvalidMax                  kind "invalid-max"      exit 2
    │   ├── CorruptDocument             kind "corrupt"          exit 8
    │   ├── GroupHalted                 kind "halted"           exit 15
    │   └── DocumentTooLarge            kind "too-large"        exit 14
    ├── StoreError                      kind "store"            exit 7
    │   ├── StoreUnavailable            kind "unavailable"      exit 7
    │   ├── AmbiguousWrite              kind "ambiguous-write"  exit 7
    │   ├── LeaseLost                   kind "lease-lost"       exit 7
    │   ├── StoreDenied                 kind "denied"           exit 9
    │   ├── WriteConflict               kind "conflict"         exit 10
    │   └── FleetLockRefused            kind "fleetlock"        exit 7
    ├── BusError                        kind "bus"              exit 11
    │   ├── RebootRefused               kind "reboot-refused"   exit 11
    │   └── MalformedSignal             kind "malformed-signal" exit 11
    ├── AlreadyRunning                  kind "already-running"  exit 12
    └── Aborted                         kind "aborted"          exit 13

Adapters map dependency exceptions into this tree (``raise X(...) from exc``);
entry points turn an error into ``exit_code`` and one line on stderr
(``one_line`` escapes control characters, so text from etcd or D-Bus cannot
forge lines or terminal sequences). Nothing below the entry points calls
``sys.exit``.
"""

from __future__ import annotations

from enum import IntEnum

from locksmithd.core.names import printable, shown_value


class ExitCode(IntEnum):
    """Process exit codes, documented in ``--help`` and the README."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIG = 3
    IDENTITY = 4
    SEMAPHORE_FULL = 5
    NOT_HOLDER = 6
    STORE_UNAVAILABLE = 7
    CORRUPT_DOCUMENT = 8
    STORE_DENIED = 9
    WRITE_CONFLICT = 10
    BUS = 11
    ALREADY_RUNNING = 12
    ABORTED = 13
    DOCUMENT_TOO_LARGE = 14
    HALTED = 15


class LocksmithError(Exception):
    """Base of every error locksmithd raises on purpose.

    ``kind`` is a short stable name for logs and JSON; ``exit_code`` is what an
    entry point exits with when this error ends the process.
    """

    kind = "error"
    exit_code = ExitCode.FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def one_line(self) -> str:
        """The message as one line, prefixed by the kind, for stderr and logs."""
        return f"{self.kind}: {printable(self.message)}"


class UsageError(LocksmithError):
    """A command-line argument is not acceptable."""

    kind = "usage"
    exit_code = ExitCode.USAGE


class InvalidName(UsageError):
    """A holder id or group name breaks the one naming rule (``core/names.py``)."""

    kind = "invalid-name"


class ConfigError(LocksmithError):
    """A configuration value is invalid; the message names source, key and value."""

    kind = "config"
    exit_code = ExitCode.CONFIG

    def __init__(self, source: str, key: str, value: object, problem: str) -> None:
        self.source = source
        self.key = key
        self.value = value
        self.problem = problem
        super().__init__(f"{printable(source)}: {printable(key)}={shown_value(value)}: {problem}")


class IdentityError(ConfigError):
    """This host has no usable identity (machine-id missing or empty)."""

    kind = "identity"
    exit_code = ExitCode.IDENTITY


class SemaphoreError(LocksmithError):
    """A semaphore operation cannot be applied to the current value."""

    kind = "semaphore"


class SemaphoreFull(SemaphoreError):
    """No free slot is left for a new holder."""

    kind = "full"
    exit_code = ExitCode.SEMAPHORE_FULL


class NotHolder(SemaphoreError):
    """The id asked to be released does not hold the semaphore."""

    kind = "not-holder"
    exit_code = ExitCode.NOT_HOLDER


class InvalidMax(SemaphoreError):
    """A requested maximum is negative or not a whole number."""

    kind = "invalid-max"
    exit_code = ExitCode.USAGE


class CorruptDocument(SemaphoreError):
    """A stored document (semaphore, holder record, halt record) does not decode or is inconsistent.

    It is never overwritten by normal commands and stops acquisitions (fail
    safe); the message names the key and the fault and says how to repair it.
    """

    kind = "corrupt"
    exit_code = ExitCode.CORRUPT_DOCUMENT

    def __init__(self, problem: str, key: str | None = None, *, what: str = "semaphore document",
                 repair: str = "repair with 'locksmithctl reset --max N --yes'") -> None:
        self.problem = problem
        self.key = key
        where = f" at {key}" if key else ""
        super().__init__(
            f"{what}{where} is corrupt: {problem}; it was left unchanged "
            f"(inspect with 'locksmithctl status --raw', {repair})"
        )


class GroupHalted(SemaphoreError):
    """The group is halted (a failed health check or an operator): nobody takes a slot until resume."""

    kind = "halted"
    exit_code = ExitCode.HALTED


class DocumentTooLarge(SemaphoreError):
    """A write would make the semaphore document larger than readers accept (1 MiB).

    Raised before anything is written, so the stored document stays as it was.
    """

    kind = "too-large"
    exit_code = ExitCode.DOCUMENT_TOO_LARGE


class StoreError(LocksmithError):
    """The key-value store (etcd) could not complete a request."""

    kind = "store"
    exit_code = ExitCode.STORE_UNAVAILABLE


class StoreUnavailable(StoreError):
    """No endpoint answered in time; the message lists the endpoints tried."""

    kind = "unavailable"


class AmbiguousWrite(StoreError):
    """A write was sent but its outcome is unknown (reply lost or timed out).

    Callers resolve it by reading back, never by blindly writing again.
    """

    kind = "ambiguous-write"


class LeaseLost(StoreError):
    """The lease a queue key was bound to expired or was revoked."""

    kind = "lease-lost"


class StoreDenied(StoreError):
    """etcd refused the request: bad credentials or missing permission."""

    kind = "denied"
    exit_code = ExitCode.STORE_DENIED


class WriteConflict(StoreError):
    """A compare-and-swap kept losing races; retried in one place, then raised."""

    kind = "conflict"
    exit_code = ExitCode.WRITE_CONFLICT


class FleetLockRefused(StoreError):
    """A FleetLock server (strategy ``fleet-lock``) did not answer 200 or could not be reached.

    ``protocol_kind`` is the error body's ``kind`` ("" when there was none);
    ``status`` the HTTP status (0 when none came); ``foreign`` True when the
    answer was not the protocol's at all (a redirect, an HTML page, a 200 of
    another shape): a misconfigured URL or proxy, never a grant.
    """

    kind = "fleetlock"

    def __init__(self, message: str, protocol_kind: str = "", *, status: int = 0, foreign: bool = False) -> None:
        super().__init__(message)
        self.protocol_kind = protocol_kind
        self.status = status
        self.foreign = foreign


class BusError(LocksmithError):
    """A D-Bus call or connection failed."""

    kind = "bus"
    exit_code = ExitCode.BUS


class RebootRefused(BusError):
    """logind refused or failed the reboot request."""

    kind = "reboot-refused"


class MalformedSignal(BusError):
    """An update_engine status body does not have the ``xdssx`` shape."""

    kind = "malformed-signal"


class AlreadyRunning(LocksmithError):
    """Another update coordinator holds the state-file lock on this host."""

    kind = "already-running"
    exit_code = ExitCode.ALREADY_RUNNING


class Aborted(LocksmithError):
    """The operator did not confirm a destructive command."""

    kind = "aborted"
    exit_code = ExitCode.ABORTED
