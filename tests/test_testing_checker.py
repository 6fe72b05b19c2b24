"""The harness's own document reader and "never more than max" checker, fed stored bytes directly."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from harness.checker import SafetyChecker, judge_history
from harness.documents import SemaphoreDocument, UnreadableDocument, read_document, stored_holders

HARNESS = Path(__file__).resolve().parent.parent / "harness"


def doc(max_slots: int, *holders: str) -> bytes:
    return json.dumps({"semaphore": max_slots - len(holders), "max": max_slots, "holders": list(holders)}).encode()


class TestReadDocument:
    def test_reads_max_holders_and_free_count_as_stored(self) -> None:
        """Holders keep their stored order and duplicates; the free count is read, not recomputed."""
        raw = b'{"semaphore": 7, "max": 2, "holders": ["b", "a", "b"], "holder_info": {}}'
        assert read_document(raw) == SemaphoreDocument(2, ("b", "a", "b"), 7)
        assert read_document(raw).duplicates == ("b",)

    def test_null_holders_is_nobody(self) -> None:
        """locksmith (Go) writes an empty holder list as null."""
        assert read_document(b'{"semaphore": 1, "max": 1, "holders": null}').holders == ()

    @pytest.mark.parametrize("raw", [
        b"not json", b"\xff\xfe", b"[1, 2]", b'{"max": 1}', b'{"max": "2", "holders": []}',
        b'{"max": true, "holders": []}', b'{"max": 1.5, "holders": []}', b'{"holders": []}',
        b'{"max": 1, "holders": "a"}', b'{"max": 1, "holders": [1]}',
    ])
    def test_unreadable_documents_are_refused(self, raw: bytes) -> None:
        with pytest.raises(UnreadableDocument):
            read_document(raw)

    def test_stored_holders_of_an_absent_key_is_nobody(self) -> None:
        assert stored_holders(None) == ()
        assert stored_holders(doc(2, "a")) == ("a",)

    def test_reader_is_independent_of_the_product_decoder(self) -> None:
        """No harness module that reads documents imports locksmithd.core.semaphore."""
        for name in ("documents.py", "checker.py"):
            tree = ast.parse((HARNESS / name).read_text())
            imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
            imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            assert not any(m and m.startswith("locksmithd") for m in imported), (name, imported)


class TestSafetyChecker:
    def test_a_safe_history_has_no_violation(self) -> None:
        checker = SafetyChecker(expected_max=2)
        for revision, raw in enumerate([doc(2), doc(2, "a"), doc(2, "a", "b"), doc(2, "b"), doc(2)], 1):
            assert checker.feed(revision, raw)
        assert checker.violations == []
        assert checker.max_holders_seen == 2
        assert [o.holders for o in checker.history] == [(), ("a",), ("a", "b"), ("b",), ()]
        assert checker.versions == 5 and checker.last_revision == 5

    def test_more_holders_than_max_is_a_violation(self) -> None:
        checker = SafetyChecker()
        checker.feed(3, doc(2, "a", "b", "c"))
        assert checker.violations == ["revision 3: 3 holders > max 2: holders ['a', 'b', 'c']"]
        assert checker.max_holders_seen == 3

    def test_duplicate_holders_are_a_violation(self) -> None:
        checker = SafetyChecker()
        checker.feed(4, b'{"semaphore": 0, "max": 2, "holders": ["a", "a"]}')
        assert checker.violations == ["revision 4: duplicate holders ['a']: holders ['a', 'a']"]

    def test_unreadable_and_deleted_versions_are_violations(self) -> None:
        checker = SafetyChecker()
        checker.feed(5, b"{oops")
        checker.feed(6, None)
        assert checker.violations[0].startswith("revision 5: undecodable document (not JSON")
        assert checker.violations[1] == "revision 6: the semaphore was deleted"
        assert checker.history == [] and checker.versions == 2

    def test_max_changed_is_a_violation_only_when_a_max_is_expected(self) -> None:
        expecting, open_minded = SafetyChecker(expected_max=2), SafetyChecker()
        for checker in (expecting, open_minded):
            checker.feed(1, doc(3, "a"))
        assert expecting.violations == ["revision 1: max changed to 3 (expected 2): holders ['a']"]
        assert open_minded.violations == []

    def test_repeated_or_older_revisions_are_ignored(self) -> None:
        """A reopened watch may deliver a revision again: it is judged once."""
        checker = SafetyChecker()
        assert checker.feed(7, doc(1, "a", "b"))
        assert not checker.feed(7, doc(1, "a", "b"))
        assert not checker.feed(6, None)
        assert len(checker.violations) == 1 and checker.versions == 1

    def test_judge_history_replays_through_the_same_checker(self) -> None:
        violations, most = judge_history([(1, doc(2)), (2, doc(2, "a", "b", "c")), (3, None)], 2)
        assert most == 3
        assert violations == ["revision 2: 3 holders > max 2: holders ['a', 'b', 'c']",
                              "revision 3: the semaphore was deleted"]
