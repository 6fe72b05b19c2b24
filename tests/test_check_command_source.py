"""The check-command source's decisions, with a scripted runner and a recorded sleep (no processes)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest

from locksmithd.core.health_policy import CommandResult
from locksmithd.sources.check_command import CheckCommandSource, next_pause_s


def scripted(*results: CommandResult) -> tuple[list[tuple[str, ...]], object]:
    calls: list[tuple[str, ...]] = []
    queue = list(results)

    async def run(argv: Sequence[str], timeout_s: float) -> CommandResult:
        calls.append(tuple(argv))
        return queue.pop(0) if queue else CommandResult(path=argv[0], exit_code=0)

    return calls, run


def result(code: int | None = None, **kw: object) -> CommandResult:
    return CommandResult(path="/bin/true", exit_code=code, **kw)  # type: ignore[arg-type]


def drive(*results: CommandResult, runs: int) -> tuple[list[str], list[float], int]:
    """Run the source until ``runs`` commands ran; return the reasons, the pauses and the run count."""
    reasons: list[str] = []
    pauses: list[float] = []
    calls, run = scripted(*results)

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0)

    async def scenario() -> None:
        source = CheckCommandSource(["/bin/true", "-r"], 600.0, reasons.append, run, timeout_s=300,  # type: ignore[arg-type]
                                    sleep=sleep, rng=random.Random(1))
        await source.start()
        for _ in range(500):
            await asyncio.sleep(0)
            if len(calls) >= runs or reasons:
                break
        await source.stop()

    asyncio.run(scenario())
    return reasons, pauses, len(calls)


def test_exit_1_is_a_reboot_once() -> None:
    reasons, _, runs = drive(result(0), result(1, output="Reboot is required\n"), runs=10)
    assert reasons == ["command: /bin/true -r exited 1: Reboot is required"] and runs == 2


@pytest.mark.parametrize("failure", [result(2), result(-9), result(None, timed_out=True, timeout_s=300),
                                     result(None, error="No such file or directory")])
def test_anything_else_is_retried_sooner_and_never_a_reboot(failure: CommandResult) -> None:
    reasons, pauses, runs = drive(*[failure] * 6, runs=6)
    assert reasons == [] and runs >= 6
    assert all(pause <= 600 for pause in pauses) and pauses[0] < 10  # backoff from 5s up to the interval


def test_exit_0_waits_the_jittered_interval() -> None:
    reasons, pauses, _ = drive(runs=5)
    assert reasons == [] and all(540 <= pause <= 660 for pause in pauses)
    assert len(set(pauses)) > 1  # jitter: a fleet does not run in step


def test_jitter_bounds() -> None:
    rng = random.Random(3)
    assert all(540 <= next_pause_s(600, rng) <= 660 for _ in range(1000))
