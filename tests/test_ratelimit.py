"""The shared rate limit paces transactions evenly, FIFO, without real sleeping."""

import pytest

from asyncmail import ConfigError, RateLimit
from asyncmail.engine._ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.mark.parametrize(
    ("text", "count", "per"),
    [("14/s", 14, 1.0), ("600/min", 600, 60.0), ("1000/h", 1000, 3600.0), ("5/10s", 5, 10.0)],
)
def test_rates_parse_from_text(text: str, count: float, per: float) -> None:
    limit = RateLimit.parse(text)
    assert (limit.count, limit.per) == (count, per)


@pytest.mark.parametrize("text", ["fast", "14", "0/s", "14/fortnight", "-1/s"])
def test_invalid_rates_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        RateLimit.parse(text)


async def test_transactions_are_spaced_by_the_interval_from_the_first_one() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(4, per=1.0), clock=clock, sleep=clock.sleep)
    for _ in range(5):
        await limiter.acquire()
    # all five callers arrive at once: the first goes now, the others wait their turn
    assert clock.sleeps == [0.25, 0.5, 0.75, 1.0]


async def test_an_idle_limiter_does_not_bank_a_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(2, per=1.0), clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    clock.now += 60  # a long quiet spell
    await limiter.acquire()
    await limiter.acquire()
    assert clock.sleeps == [0.5]


async def test_burst_lets_that_many_through_at_once_then_paces() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(10, per=1.0, burst=3), clock=clock, sleep=clock.sleep)
    waits = [limiter.reserve() for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2])


def test_within_any_window_the_limit_is_never_exceeded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(14, per=1.0), clock=clock, sleep=clock.sleep)
    starts = [clock.now + limiter.reserve() for _ in range(100)]
    for i, start in enumerate(starts):
        in_window = [s for s in starts[i:] if s < start + 1.0 - 1e-9]
        assert len(in_window) <= 14
