"""Decoding update_engine's xdssx status body (pure, no bus)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from locksmithd.errors import BusError
from locksmithd.core.update_status import (
    NEED_REBOOT,
    MalformedSignal,
    UpdateStatus,
    parse_status_body,
)

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def test_parses_a_well_formed_body() -> None:
    """Each of the five fields lands in its attribute."""
    status = parse_status_body("xdssx", [1700000000, 0.5, "UPDATE_STATUS_DOWNLOADING", "3.0", 42])
    assert status == UpdateStatus(1700000000, 0.5, "UPDATE_STATUS_DOWNLOADING", "3.0", 42)


def test_needs_reboot_only_for_the_need_reboot_operation() -> None:
    """needs_reboot is true for UPDATE_STATUS_UPDATED_NEED_REBOOT and nothing else."""
    assert UpdateStatus(0, 0.0, NEED_REBOOT, "", 0).needs_reboot
    assert not UpdateStatus(0, 0.0, "UPDATE_STATUS_IDLE", "", 0).needs_reboot
    assert not UpdateStatus(0, 0.0, NEED_REBOOT.lower(), "", 0).needs_reboot


def test_integer_progress_is_widened_to_float() -> None:
    """An int progress is a number too; it comes back as a float."""
    status = parse_status_body("xdssx", [0, 1, "UPDATE_STATUS_IDLE", "", 0])
    assert status.progress == 1.0
    assert isinstance(status.progress, float)


@given(INT64, st.floats(allow_nan=False), st.text(), st.text(), INT64)
def test_body_round_trips(
    checked: int, progress: float, operation: str, version: str, size: int
) -> None:
    """to_body then parse_status_body gives the same status back."""
    status = UpdateStatus(checked, progress, operation, version, size)
    assert parse_status_body("xdssx", status.to_body()) == status


@pytest.mark.parametrize("signature", ["", "s", "xd", "xdssxs", "tdssx", "xdsst"])
def test_rejects_another_signature(signature: str) -> None:
    """Only the exact signature xdssx is accepted, whatever the body."""
    with pytest.raises(MalformedSignal, match="signature"):
        parse_status_body(signature, [0, 0.0, NEED_REBOOT, "", 0])


@pytest.mark.parametrize(
    "body", [[], [0, 0.0], [0, 0.0, NEED_REBOOT, ""], [0, 0.0, NEED_REBOOT, "", 0, 0]]
)
def test_rejects_a_body_of_the_wrong_length(body: list[object]) -> None:
    """Short and long bodies are errors, never padded or truncated."""
    with pytest.raises(MalformedSignal, match="items"):
        parse_status_body("xdssx", body)


@pytest.mark.parametrize(
    "body",
    [
        ["0", 0.0, NEED_REBOOT, "", 0],
        [True, 0.0, NEED_REBOOT, "", 0],
        [0, "0.0", NEED_REBOOT, "", 0],
        [0, False, NEED_REBOOT, "", 0],
        [0, 0.0, 7, "", 0],
        [0, 0.0, NEED_REBOOT, None, 0],
        [0, 0.0, NEED_REBOOT, "", 0.0],
    ],
)
def test_rejects_wrong_types(body: list[object]) -> None:
    """A field of the wrong Python type (bool is not an integer) is an error."""
    with pytest.raises(MalformedSignal, match="status field"):
        parse_status_body("xdssx", body)


def test_malformed_signal_is_a_bus_error_with_its_own_kind() -> None:
    """MalformedSignal sits under BusError with kind malformed-signal."""
    error = MalformedSignal("bad")
    assert isinstance(error, BusError)
    assert error.kind == "malformed-signal"
    assert error.one_line() == "malformed-signal: bad"
