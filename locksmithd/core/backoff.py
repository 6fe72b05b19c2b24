"""Capped exponential backoff with jitter, shared by every retry loop of the daemon."""

from __future__ import annotations

import random


def jittered_backoff_s(attempt: int, base_s: float, cap_s: float, rng: random.Random,
                       max_doublings: int = 10) -> float:
    """Seconds to wait before retry ``attempt``: ``min(cap, base * 2**attempt)`` scaled by 50-100 %.

    The jitter keeps a fleet that failed together from retrying together;
    ``max_doublings`` bounds the exponent.
    """
    delay_s = min(cap_s, base_s * 2 ** min(attempt, max_doublings))
    return float(delay_s * (0.5 + rng.random() / 2))
