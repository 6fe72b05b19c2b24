"""Capped exponential backoff with jitter: the one retry policy of every loop in locksmithd."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays for one retry loop: ``min(cap, base * 2**attempt)`` scaled by 50-100 % jitter.

    Each retry loop owns one Backoff. ``next_delay_s`` counts a failure and
    returns how long to sleep before the next try; ``reset`` is called on
    success. ``give_up_gently`` jumps straight to the cap, for faults only an
    operator can mend (a corrupt document, a denied request): retrying fast
    would only hammer etcd and the journal. The jitter keeps a fleet that
    failed together from retrying together. Pure: randomness comes from ``rng``.
    """

    base_s: float
    cap_s: float
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0
    max_doublings: int = 16

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s <= 0:
            raise ValueError(f"backoff needs positive base and cap, got {self.base_s} and {self.cap_s}")

    def next_delay_s(self) -> float:
        """Count one more failure; return the jittered delay before the next try."""
        delay_s = min(self.cap_s, self.base_s * 2 ** min(self.attempt, self.max_doublings))
        self.attempt += 1
        return float(delay_s * (0.5 + self.rng.random() / 2))

    def give_up_gently(self) -> None:
        """From now on every delay is at the cap (until ``reset``)."""
        self.attempt = self.max_doublings

    def reset(self) -> None:
        """A success: the next failure starts again from ``base_s``."""
        self.attempt = 0

    @property
    def at_cap(self) -> bool:
        """True when delays no longer grow."""
        return bool(self.base_s * 2 ** min(self.attempt, self.max_doublings) >= self.cap_s)
