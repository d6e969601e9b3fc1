"""Backoff between attempts: exponential, capped, with full jitter, within a time budget."""

from __future__ import annotations

import random

from .._config import RetryPolicy

__all__ = ["backoff_delay", "may_retry"]


def backoff_delay(policy: RetryPolicy, retry: int, *, rng: random.Random | None = None) -> float:
    """The delay before retry number ``retry`` (1 for the first retry)."""
    delay = min(policy.max_delay, policy.base_delay * 2.0 ** (retry - 1))
    if policy.jitter:
        delay = (rng or random).uniform(0, delay)
    return delay


def may_retry(policy: RetryPolicy, attempts: int, elapsed: float, delay: float) -> bool:
    """True when another attempt fits in the policy's count and time budget."""
    return attempts < policy.attempts and elapsed + delay <= policy.max_time
