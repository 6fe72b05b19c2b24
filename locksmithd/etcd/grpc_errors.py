"""What a gRPC error from etcd means for us, as one table read top to bottom (pure: no grpc import)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from locksmithd.errors import LeaseLost, StoreDenied, StoreError


class Action(enum.Enum):
    """What the adapter does with an error that is not one of ours."""

    TRY_NEXT = "try the next endpoint"
    """The member did not answer usefully; another member may (a write is then ambiguous)."""
    REAUTHENTICATE = "authenticate again, then retry once on the same endpoint"
    """The auth token expired or predates an auth change; a new token fixes it."""


@dataclass(frozen=True)
class Rule:
    """One row: a status code name and a fragment of etcd's detail text ("" matches any)."""

    code: str
    detail: str
    outcome: Action | type[StoreError]


RULES: tuple[Rule, ...] = (
    # Tokens expire (etcd's --auth-token-ttl, 300 s idle by default) and die with the
    # member that issued them; an auth change makes older tokens "old revision".
    Rule("UNAUTHENTICATED", "invalid auth token", Action.REAUTHENTICATE),
    Rule("INVALID_ARGUMENT", "revision of auth store is old", Action.REAUTHENTICATE),
    # Auth on and no credentials given: etcd says "user name is empty". That is a
    # refusal the operator must fix (exit 9), not an unreachable etcd (exit 7).
    Rule("INVALID_ARGUMENT", "user name is empty", StoreDenied),
    Rule("INVALID_ARGUMENT", "authentication failed", StoreDenied),
    Rule("FAILED_PRECONDITION", "user name not found", StoreDenied),
    Rule("UNAUTHENTICATED", "", StoreDenied),
    Rule("PERMISSION_DENIED", "", StoreDenied),
    Rule("NOT_FOUND", "lease", LeaseLost),
    # UNKNOWN is how etcd reports "context deadline exceeded" from a member that lost
    # its leader: try another member (and treat a write as ambiguous, read back).
    Rule("UNAVAILABLE", "", Action.TRY_NEXT),
    Rule("DEADLINE_EXCEEDED", "", Action.TRY_NEXT),
    Rule("CANCELLED", "", Action.TRY_NEXT),
    Rule("UNKNOWN", "", Action.TRY_NEXT),
    Rule("INTERNAL", "", Action.TRY_NEXT),
)
"""First match wins; a code and detail matching no row is a plain StoreError."""


def classify(code: str, details: str | None) -> Action | type[StoreError]:
    """The outcome for gRPC status ``code`` (its name, e.g. "UNAVAILABLE") and ``details``."""
    text = details or ""
    for rule in RULES:
        if rule.code == code and rule.detail in text:
            return rule.outcome
    return StoreError
