"""A rate limit shared by every connection of a Mailer, enforced before each transaction.

The limiter is a GCRA (generic cell rate algorithm): each caller reserves the next free
slot synchronously, then sleeps until it. Reservation order is call order, so waiters are
served FIFO; a cancelled waiter only wastes its slot, which can lower the rate but never
raise it above the limit.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import anyio

from .._exceptions import ConfigError

__all__ = ["Limiter", "RateLimit", "RateLimiter"]

_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_UNITS |= {"h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}
_PATTERN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` transactions per ``per`` seconds, with bursts up to ``burst``.

    ``RateLimit.parse("14/s")`` and ``RateLimit(14, per=1.0)`` are the same limit.
    The default burst of 1 spaces transactions evenly, which is what relays such as
    Amazon SES count against.
    """

    count: float
    per: float = 1.0
    burst: int = 1

    def __post_init__(self) -> None:
        if self.count <= 0 or self.per <= 0:
            raise ConfigError("a rate limit needs a positive count and period")
        if self.burst < 1:
            raise ConfigError("burst must be >= 1")

    @property
    def interval(self) -> float:
        """Seconds between two transactions at the steady rate."""
        return self.per / self.count

    @classmethod
    def parse(cls, text: str | RateLimit) -> RateLimit:
        """Parse ``"14/s"``, ``"600/min"``, ``"1000/h"`` or ``"5/10s"``.

        Raises:
            ConfigError: The text is not a rate.
        """
        if isinstance(text, RateLimit):
            return text
        m = _PATTERN.fullmatch(text.lower())
        if m is None or m.group(3) not in _UNITS:
            raise ConfigError(f"invalid rate {text!r}: use a form like '14/s' or '600/min'")
        count = float(m.group(1))
        per = float(m.group(2) or 1) * _UNITS[m.group(3)]
        return cls(count, per=per)

    def __str__(self) -> str:
        return f"{self.count:g}/{self.per:g}s"


class Limiter(Protocol):
    """What the driver waits on before each transaction (this process's, or a shared one)."""

    async def acquire(self) -> None:
        """Wait until the caller may start one transaction."""


class RateLimiter:
    """Paces callers to a RateLimit. One instance is shared by all of a Mailer's senders."""

    def __init__(
        self,
        limit: RateLimit,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self._tat: float | None = None  # theoretical arrival time of the next slot

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return anyio.current_time()

    def reserve(self) -> float:
        """Take the next slot now and return how long to wait for it (pure bookkeeping)."""
        now = self._now()
        interval = self.limit.interval
        tat = now if self._tat is None or self._tat < now else self._tat
        wait = tat - (self.limit.burst - 1) * interval - now
        self._tat = tat + interval
        return max(0.0, wait)

    async def acquire(self) -> None:
        """Wait until the caller may start one transaction."""
        wait = self.reserve()
        if wait > 0:
            await self._sleep(wait)

    def __repr__(self) -> str:
        return f"<RateLimiter {self.limit}>"
