"""The soak's plan and its documentation agree: faults per run, run count, the replay flag."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from harness.faults import FAULTS_PER_RUN, RunConfig, random_faults
from harness.soak import DEFAULT_RUNS, parse_args, run_seeds

ROOT = Path(__file__).resolve().parent.parent
LOW, HIGH = FAULTS_PER_RUN


def soak_help(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    return " ".join(capsys.readouterr().out.split())


def readme_soak_paragraph() -> str:
    readme = (ROOT / "README.md").read_text()
    modes = readme.split("\n## Failure modes\n", 1)[1].split("\n## ", 1)[0]
    (paragraph,) = [p for p in modes.split("\n\n") if p.startswith("Long run (`make soak`")]
    return " ".join(paragraph.split())


def test_random_runs_draw_the_documented_number_of_faults() -> None:
    counts = {len(random_faults(random.Random(seed), RunConfig())) for seed in range(200)}
    assert counts == set(range(LOW, HIGH + 1))


def test_help_states_the_fault_count_the_run_count_and_the_replay_flag(capsys: pytest.CaptureFixture[str]) -> None:
    text = soak_help(capsys)
    assert f"draws {LOW} to {HIGH} faults" in text
    assert f"number of randomized runs [{DEFAULT_RUNS}]" in text
    assert "--replay SEED runs that one again" in text


def test_readme_says_what_the_soak_does() -> None:
    paragraph = readme_soak_paragraph()
    assert f"{DEFAULT_RUNS} runs by default" in paragraph
    assert f"{LOW} to {HIGH} random faults per run" in paragraph
    assert "`--replay SEED` runs that one again" in paragraph


def test_make_soak_runs_the_soak_with_its_own_defaults() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^SOAK_ARGS \?=\s*$", makefile, re.MULTILINE), "make soak must not override the defaults"
    assert "python -m harness.soak $(SOAK_ARGS)" in makefile


def test_replay_runs_exactly_the_given_seeds_and_a_master_seed_repeats_the_sequence() -> None:
    assert run_seeds(parse_args(["--replay", "5", "--replay", "9", "--runs", "3"])) == [5, 9]
    first, again = (run_seeds(parse_args(["--seed", "42", "--runs", "3"])) for _ in range(2))
    assert first == again and len(first) == 3
    assert parse_args([]).runs == DEFAULT_RUNS
