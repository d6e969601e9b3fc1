"""Backoff between attempts: exponential, capped, jittered, within the policy's budget."""

import random

import pytest

from asyncmail import RetryPolicy
from asyncmail.engine._retry import backoff_delay, may_retry


def test_delays_double_from_the_base_and_stop_at_the_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0, jitter=False)
    assert [backoff_delay(policy, n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_full_jitter_stays_between_zero_and_the_exponential_delay() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, jitter=True)
    rng = random.Random(7)
    for retry in range(1, 8):
        ceiling = min(8.0, 2.0 ** (retry - 1))
        delays = [backoff_delay(policy, retry, rng=rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # spread out, not stuck at zero


@pytest.mark.parametrize(
    ("attempts", "elapsed", "delay", "expected"),
    [
        (1, 0.0, 0.5, True),
        (3, 0.0, 0.5, False),  # the third attempt was the last
        (1, 9.8, 0.5, False),  # the next one would start after max_time
        (2, 9.0, 1.0, True),
    ],
)
def test_another_attempt_must_fit_the_count_and_the_time_budget(
    attempts: int, elapsed: float, delay: float, expected: bool
) -> None:
    policy = RetryPolicy(attempts=3, max_time=10.0)
    assert may_retry(policy, attempts, elapsed, delay) is expected
