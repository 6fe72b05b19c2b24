"""A pure view of one group's semaphore and halt, and where this process's waiters stand.

The queue is the set of waiter keys ordered by create revision (arrival
order). No process holds the whole queue: each waiter knows only the waiter
just ahead of it (its predecessor) and how many keys are ahead (its
position). Only a waiter with no predecessor (the head) follows the
semaphore and the halt record, and only the head may try to take a free slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from locksmithd.core.halt import Halt, decode_halt
from locksmithd.core.semaphore import Semaphore, decode, initial_semaphore
from locksmithd.errors import CorruptDocument


@dataclass
class GroupView:
    """What one process knows of a group.

    ``semaphore_revision`` is the document's mod revision (0 when absent, which
    is also what etcd compares a missing key's revision to). ``corrupt`` is set
    instead of ``semaphore`` when the stored document does not decode.
    ``halt`` is the group's halt record (or ``halt_corrupt`` when it does not
    decode): either one stops every attempt. ``seen`` holds the store revision
    each of the two keys was last known at: older news is ignored, since
    snapshots (reads) and watch events from several waiters interleave.
    """

    semaphore_key: str
    semaphore: Semaphore = field(default_factory=initial_semaphore)
    semaphore_revision: int = 0
    corrupt: CorruptDocument | None = None
    seen: dict[str, int] = field(default_factory=dict)
    halt_key: str = ""
    halt: Halt | None = None
    halt_corrupt: CorruptDocument | None = None
    positions: dict[str, int] = field(default_factory=dict)  # local holder -> keys ahead of it
    heads: set[str] = field(default_factory=set)  # local holders with no waiter ahead

    def snapshot(self, revision: int, semaphore: tuple[bytes, int] | None, halt: bytes | None) -> None:
        """Record the semaphore (value, mod revision) and halt read together at ``revision``."""
        if revision >= self.seen.get(self.semaphore_key, 0):
            self.seen[self.semaphore_key] = revision
            self.set_semaphore(semaphore[0] if semaphore else None, semaphore[1] if semaphore else 0)
        if revision >= self.seen.get(self.halt_key, 0):
            self.seen[self.halt_key] = revision
            self.set_halt(halt)

    def changed(self, key: str, raw: bytes | None, revision: int) -> bool:
        """Apply one watched change (None: deleted) made at ``revision``; False if already known."""
        if key not in (self.semaphore_key, self.halt_key) or revision <= self.seen.get(key, 0):
            return False
        self.seen[key] = revision
        if key == self.semaphore_key:
            self.set_semaphore(raw, revision)
        elif key == self.halt_key:
            self.set_halt(raw)
        return True

    def set_halt(self, raw: bytes | None) -> None:
        """Record the halt record (None: resumed); a corrupt one stops attempts like a halt."""
        self.halt = self.halt_corrupt = None
        if raw is None:
            return
        try:
            self.halt = decode_halt(raw, self.halt_key or None)
        except CorruptDocument as error:
            self.halt_corrupt = error

    @property
    def halted(self) -> bool:
        return self.halt is not None or self.halt_corrupt is not None

    def set_semaphore(self, raw: bytes | None, mod_revision: int) -> None:
        """Record a new document (None: deleted); a corrupt one blocks every attempt."""
        self.semaphore_revision = mod_revision if raw is not None else 0
        if raw is None:
            self.semaphore, self.corrupt = initial_semaphore(), None
            return
        try:
            self.semaphore, self.corrupt = decode(raw, self.semaphore_key), None
        except CorruptDocument as error:
            self.corrupt = error

    def place(self, holder: str, position: int, head: bool) -> None:
        """Record where a local waiter stands: ``position`` keys ahead, at the head or not."""
        self.positions[holder] = position
        if head:
            self.heads.add(holder)
        else:
            self.heads.discard(holder)

    def remove_waiter(self, holder: str) -> None:
        self.positions.pop(holder, None)
        self.heads.discard(holder)

    def position(self, holder: str) -> int | None:
        """0-based place of local ``holder`` in the queue, or None if it is not queued."""
        return self.positions.get(holder)

    def slot_free(self) -> bool:
        """True when a slot is free, the group not halted and the document sound."""
        return self.corrupt is None and not self.halted and self.semaphore.available > 0

    def may_attempt(self, holder: str) -> bool:
        """True when ``holder`` is at the head, a slot is free, the group not halted and the document sound."""
        return holder in self.heads and self.slot_free() and not self.semaphore.holds(holder)
