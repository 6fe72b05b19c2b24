"""The one "never more holders than max" checker, fed every version of a semaphore key in revision order."""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

from harness.documents import UnreadableDocument, read_document


class Observation(NamedTuple):
    """One readable version of the document: when it was seen (monotonic), its revision, max and holders."""

    at: float
    revision: int
    max: int
    holders: tuple[str, ...]


class SafetyChecker:
    """Judges each stored version of one semaphore key; live watches and history replays both feed it.

    A version is a violation when it lists more holders than its max, lists a
    holder twice, cannot be read (see ``harness.documents``), is a deletion, or,
    when ``expected_max`` is given, carries another max. Versions at or below
    the newest revision already fed are ignored, so a reopened watch may
    repeat itself. Thread-safe: a watch thread and a guard thread may both feed.
    """

    def __init__(self, expected_max: int | None = None) -> None:
        self.expected_max = expected_max
        self.violations: list[str] = []
        self.history: list[Observation] = []  # readable versions only
        self.max_holders_seen = 0
        self.last_revision = 0
        self.versions = 0  # every version judged, readable or not
        self._lock = threading.Lock()

    def feed(self, revision: int, raw: bytes | None, at: float | None = None) -> bool:
        """Judge the version stored at ``revision`` (``raw`` None: the key was deleted).

        Returns False, judging nothing, for a revision not newer than the last one fed.
        """
        with self._lock:
            if revision <= self.last_revision:
                return False
            self.last_revision = revision
            self.versions += 1
            self._judge(revision, raw, time.monotonic() if at is None else at)
            return True

    def _judge(self, revision: int, raw: bytes | None, at: float) -> None:
        if raw is None:
            self.violations.append(f"revision {revision}: the semaphore was deleted")
            return
        try:
            document = read_document(raw)
        except UnreadableDocument as error:
            self.violations.append(f"revision {revision}: undecodable document ({error}) {raw[:80]!r}")
            return
        holders = document.holders
        self.max_holders_seen = max(self.max_holders_seen, len(holders))
        self.history.append(Observation(at, revision, document.max, holders))
        problems = []
        if len(holders) > document.max:
            problems.append(f"{len(holders)} holders > max {document.max}")
        if document.duplicates:
            problems.append(f"duplicate holders {list(document.duplicates)}")
        if self.expected_max is not None and document.max != self.expected_max:
            problems.append(f"max changed to {document.max} (expected {self.expected_max})")
        if problems:
            self.violations.append(f"revision {revision}: {'; '.join(problems)}: holders {list(holders)}")


def judge_history(history: list[tuple[int, bytes | None]], max_expected: int) -> tuple[list[str], int]:
    """Violations in a replayed history (see SafetyChecker, with ``max_expected``) and the most holders."""
    checker = SafetyChecker(expected_max=max_expected)
    for revision, raw in history:
        checker.feed(revision, raw)
    return checker.violations, checker.max_holders_seen
