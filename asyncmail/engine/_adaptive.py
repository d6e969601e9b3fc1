"""A relay's adaptive pace: its rate limit, halved when the server says "too fast", raised back.

Pure bookkeeping on an injected clock; the relay (``asyncmail.engine._relays``) logs the
changes and lowers its pool's connection cap alongside.

- ``slow_down(now)``: a throttle signal. The rate is halved: the current limit, or, for a
  relay without one, the rate measured over the last ``MEASURE_WINDOW`` seconds or so. The
  signals within ``THROTTLE_HOLD`` seconds of a decrease are counted but lower nothing more:
  a hundred messages refused in the same burst are one signal, not a hundred halvings.
- ``recover(now)``: after ``RAISE_AFTER`` seconds without a signal, the rate grows by 25%,
  and again after each further quiet period, up to the configured limit (or, for a relay
  without one, back to no limit once it passes the rate measured when it was first slowed).
"""

from __future__ import annotations

from collections.abc import Callable

from ._ratelimit import RateLimit, RateLimiter

__all__ = ["MIN_RATE", "RAISE_AFTER", "THROTTLE_HOLD", "Pace", "format_rate"]

THROTTLE_HOLD = 5.0  # seconds after a decrease during which more signals lower nothing more
RAISE_AFTER = 30.0  # quiet seconds before the rate is raised by RAISE_STEP
RAISE_STEP = 1.25
MIN_RATE = 0.1  # transactions per second: never slower than one every 10 s
MEASURE_WINDOW = 5.0


def format_rate(rate: float | None) -> str:
    """``"25/s"``, ``"0.5/s"`` or ``"unlimited"``."""
    return "unlimited" if rate is None else f"{rate:.4g}/s"


class Pace:
    """The rate limit of one relay: configured, lowered by throttle signals, raised back."""

    __slots__ = (
        "_mark_count",
        "_mark_time",
        "_prev_count",
        "_prev_time",
        "ceiling",
        "changed",
        "configured",
        "limiter",
        "lowered",
        "started",
        "throttled",
    )

    def __init__(self, configured: RateLimit | None, *, clock: Callable[[], float]) -> None:
        self.configured = configured
        self.limiter: RateLimiter | None = None if configured is None else RateLimiter(configured)
        self.lowered = False  # the rate is below the configured one (or limited when none is)
        self.ceiling: float | None = None  # the rate to return to (None: no limit)
        self.changed = 0.0  # when the rate last changed
        self.throttled = 0  # throttle signals seen
        self.started = 0  # transactions started on this relay
        now = clock()
        self._mark_count = self._prev_count = 0
        self._mark_time = self._prev_time = now

    @property
    def rate(self) -> float | None:
        """Transactions per second allowed now; None for no limit."""
        limiter = self.limiter
        return None if limiter is None else limiter.limit.count / limiter.limit.per

    def note(self, now: float) -> None:
        """Count a transaction that starts now (for the measured rate)."""
        self.started += 1
        if now - self._mark_time >= MEASURE_WINDOW:
            self._prev_count, self._prev_time = self._mark_count, self._mark_time
            self._mark_count, self._mark_time = self.started, now

    def measured(self, now: float) -> float:
        """Transactions per second over the last window or two."""
        elapsed = now - self._prev_time
        if elapsed <= 0:
            return 0.0
        return (self.started - self._prev_count) / elapsed

    def _set(self, rate: float, now: float) -> None:
        self.changed = now
        burst = self.configured.burst if self.configured is not None else 1
        limit = RateLimit(rate, per=1.0, burst=burst)
        if self.limiter is None:
            self.limiter = RateLimiter(limit)
        else:
            self.limiter.limit = limit  # (the next reservation paces at the new interval)

    def slow_down(self, now: float) -> tuple[float | None, float] | None:
        """Book a throttle signal; return (old rate, new rate) when the rate changed."""
        self.throttled += 1
        if self.lowered and now - self.changed < THROTTLE_HOLD:
            return None
        old = self.rate
        if not self.lowered:
            self.ceiling = old if old is not None else max(self.measured(now), MIN_RATE)
        current = old if old is not None else max(self.measured(now), MIN_RATE)
        new = max(MIN_RATE, current / 2)
        self.lowered = True
        self._set(new, now)
        return old, new

    def recover(self, now: float) -> tuple[float, float | None] | None:
        """Raise the rate after a quiet period; return (old rate, new rate) when it rose."""
        if not self.lowered or now - self.changed < RAISE_AFTER:
            return None
        old = self.rate
        assert old is not None
        new = old * RAISE_STEP
        ceiling = self.ceiling
        if ceiling is not None and new < ceiling:
            self._set(new, now)
            return old, new
        self.lowered = False  # back where it was: the configured limit, or none
        self.changed = now
        configured = self.configured
        if configured is None:
            self.limiter = None
        else:
            assert self.limiter is not None  # (made when the configured limit was)
            self.limiter.limit = configured
        return old, self.rate
