"""A pure view of one group's semaphore and FIFO waiting queue, fed by watch events.

The queue is the set of waiter keys ordered by create revision (arrival
order). Only the head of the queue (the oldest waiter that does not already
hold a slot) may try to take a free slot, so slots are handed out strictly
first come, first served and a release wakes one host, not the herd.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from locksmithd.core.halt import Halt, decode_halt
from locksmithd.core.semaphore import Semaphore, decode, initial_semaphore
from locksmithd.errors import CorruptDocument


@dataclass
class GroupView:
    """What one process knows of a group at ``revision``.

    ``semaphore_revision`` is the document's mod revision (0 when absent, which
    is also what etcd compares a missing key's revision to). ``corrupt`` is set
    instead of ``semaphore`` when the stored document does not decode.
    ``halt`` is the group's halt record (or ``halt_corrupt`` when it does not
    decode): either one stops every attempt.
    """

    semaphore_key: str
    semaphore: Semaphore = field(default_factory=initial_semaphore)
    semaphore_revision: int = 0
    corrupt: CorruptDocument | None = None
    waiters: dict[str, int] = field(default_factory=dict)  # holder id -> create revision, oldest first
    revision: int = 0
    halt_key: str = ""
    halt: Halt | None = None
    halt_corrupt: CorruptDocument | None = None

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

    def add_waiter(self, holder: str, create_revision: int) -> None:
        """Record a waiter key put; a re-put keeps its place (etcd keeps the create revision)."""
        if holder in self.waiters and self.waiters[holder] == create_revision:
            return
        self.waiters.pop(holder, None)
        newest = next(reversed(self.waiters.values()), 0)  # the dict is kept oldest first
        self.waiters[holder] = create_revision
        if create_revision < newest:  # rare: an older key seen late; arrivals usually come in order
            self.waiters = dict(sorted(self.waiters.items(), key=lambda item: item[1]))

    def remove_waiter(self, holder: str) -> None:
        self.waiters.pop(holder, None)

    def queue(self) -> list[str]:
        """Waiting hosts in arrival order, leaving out those that already hold a slot."""
        return [h for h in self.waiters if not self.semaphore.holds(h)]

    def head(self) -> str | None:
        """The oldest waiter without a slot, or None when nobody waits."""
        for holder in self.waiters:
            if not self.semaphore.holds(holder):
                return holder
        return None

    def position(self, holder: str) -> int | None:
        """0-based place of ``holder`` in the queue, or None if it is not queued."""
        try:
            return self.queue().index(holder)
        except ValueError:
            return None

    def may_attempt(self, holder: str) -> bool:
        """True when ``holder`` is at the head, a slot is free, the group not halted and the document sound."""
        return (self.corrupt is None and not self.halted and self.semaphore.available > 0
                and not self.semaphore.holds(holder) and self.head() == holder)
