"""The pure FleetLock protocol rules: header, body, id and group validation, error kinds and body."""

from __future__ import annotations

import json

import pytest

from locksmithd.core.fleetlock_protocol import (
    MAX_BODY_BYTES,
    ClientParams,
    ErrorKind,
    ProtocolError,
    header_problem,
    parse_body,
)


def params(client_id: object, group: object = "default") -> bytes:
    return json.dumps({"client_params": {"id": client_id, "group": group}}).encode()


def test_valid_request_and_default_group_mapping() -> None:
    """The protocol's "default" group is locksmith's default group ""; others keep their name."""
    assert parse_body(params("abc")) == ClientParams("abc", "default")
    assert ClientParams("abc", "default").locksmith_group == ""
    assert ClientParams("abc", "workers.eu-1").locksmith_group == "workers.eu-1"


def test_unknown_fields_are_ignored() -> None:
    """Extensions of the body do not make it invalid."""
    raw = json.dumps({"client_params": {"id": "a", "group": "g", "x": 1}, "extra": True}).encode()
    assert parse_body(raw) == ClientParams("a", "g")


@pytest.mark.parametrize("value", ["true", "True", " true "])
def test_header_true_is_accepted(value: str) -> None:
    assert header_problem(value) is None


@pytest.mark.parametrize("value", [None, "", "false", "1", "yes"])
def test_header_other_values_are_refused(value: str | None) -> None:
    problem = header_problem(value)
    assert problem is not None and problem.error is ErrorKind.BAD_HEADER and problem.status == 400


@pytest.mark.parametrize(("raw", "kind"), [
    (b"", ErrorKind.BAD_BODY), (b"null", ErrorKind.BAD_BODY), (b'{"client_params": []}', ErrorKind.BAD_BODY),
    (params("a", None), ErrorKind.BAD_BODY), (params(None), ErrorKind.BAD_BODY),
    (params(""), ErrorKind.BAD_CLIENT_ID), (params(["a"]), ErrorKind.BAD_CLIENT_ID),
    (params("a\u200bb"), ErrorKind.BAD_CLIENT_ID), (params("x" * 257), ErrorKind.BAD_CLIENT_ID),
    (params("a", ""), ErrorKind.BAD_GROUP), (params("a", 5), ErrorKind.BAD_GROUP),
    (params("a", "a b"), ErrorKind.BAD_GROUP), (params("a", "x" * 257), ErrorKind.BAD_GROUP),
    (b"x" * (MAX_BODY_BYTES + 1), ErrorKind.BODY_TOO_LARGE),
])
def test_bad_bodies(raw: bytes, kind: ErrorKind) -> None:
    outcome = parse_body(raw)
    assert isinstance(outcome, ProtocolError) and outcome.error is kind


def test_error_kinds_are_distinct_and_statuses_are_failures() -> None:
    """Bounded, distinct kinds; every status is 4xx or 5xx as the protocol asks."""
    kinds = [kind.kind for kind in ErrorKind]
    assert len(kinds) == len(set(kinds))
    assert all(400 <= kind.status < 600 for kind in ErrorKind)
    assert ErrorKind.SEMAPHORE_FULL.kind == "failed_lock_semaphore_full"


def test_error_body_shape_is_bounded_and_one_line() -> None:
    """{"kind", "value"}, both non-empty; a value echoing input is escaped and bounded."""
    document = json.loads(ProtocolError(ErrorKind.BAD_BODY, "bad\nline" + "x" * 5000).body())
    assert set(document) == {"kind", "value"}
    assert document["kind"] == "bad_request_body" and "\n" not in document["value"]
    assert len(document["value"]) <= 1000
    assert json.loads(ProtocolError(ErrorKind.INTERNAL, "").body())["value"] == "internal_error"
