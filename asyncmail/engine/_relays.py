"""Several relays: which one a session uses, which are down, and each one's pace and counts.

A Mailer has one or more relays, each with its own pool, rate limit and statistics. The
``Relays`` set chooses the relay for a new session:

- ``"failover"``: the first relay in the given order that is up.
- ``"round-robin"``: the next relay in turn that is up, preferring one with a free
  connection (a session, that is one connection, at a time: a ``send()``, or a
  ``send_many`` worker until its connection goes idle).

A relay that could not take a connection (connect, TLS, EHLO, AUTH refused, a 4xx/5xx
greeting, a timeout in the handshake) is marked down for ``retry_period`` seconds and
skipped; after that it is tried again (probed), and is up again as soon as a connection
opens. When every relay is down, the one whose period ends first is tried rather than
failing without trying. These are pure state changes on an injected clock; the driver
(``asyncmail.engine._driver``) does the I/O and decides when a job may move.

A throttle signal (``asyncmail.smtp._throttle``) slows a relay: its rate is halved
(``asyncmail.engine._adaptive``) and its pool's connection cap lowered; both come back
gradually. Each change is logged once, never once per message.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from .._config import PoolLimits, Server, Timeouts
from .._exceptions import ConfigError, DeliveryError, Phase, PoolTimeout, Status
from .._pool import Pool, PoolStatistics
from ._adaptive import Pace, format_rate
from ._ratelimit import RateLimit

__all__ = [
    "HANDSHAKE_PHASES",
    "Relay",
    "RelayState",
    "RelayStatistics",
    "Relays",
    "Strategy",
    "fails_over",
]

logger = logging.getLogger("asyncmail")

Strategy = Literal["failover", "round-robin"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
DEFAULT_RETRY_PERIOD = 60.0

#: The phases before MAIL: a failure there means the relay took nothing of the message.
HANDSHAKE_PHASES = frozenset(
    {Phase.CONNECT, Phase.GREETING, Phase.EHLO, Phase.STARTTLS, Phase.AUTH}
)


def fails_over(error: DeliveryError) -> bool:
    """True for a failure that says the relay is unusable, not that it refused the message:
    connect, TLS, EHLO, AUTH, a refused greeting or a timeout before MAIL. A full pool
    (PoolTimeout) is our own congestion, and a reply to MAIL/RCPT/DATA is the relay's answer."""
    return error.phase in HANDSHAKE_PHASES and not isinstance(error, PoolTimeout)


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Relay:
    """One relay of a Mailer, with limits of its own instead of the Mailer's.

    Args:
        server: An ``smtp://``/``smtps://`` URL or a ``Server``.
        max_connections: Open connections at most to this relay (default: the Mailer's).
        rate_limit: Transactions at most through this relay, such as ``"14/s"``
            (default: the Mailer's ``rate_limit``).

    ``Mailer([Relay("smtps://u:p@a.example.com", rate_limit="14/s"), "smtps://b.example.com"])``
    """

    server: Server
    max_connections: int | None = None
    rate_limit: RateLimit | None = None

    def __init__(
        self,
        server: str | Server,
        *,
        max_connections: int | None = None,
        rate_limit: str | RateLimit | None = None,
    ) -> None:
        if isinstance(server, str):
            server = Server.from_url(server)
        elif not isinstance(server, Server):
            raise ConfigError(f"expected a URL or a Server, not {type(server).__name__}")
        if max_connections is not None and (
            not isinstance(max_connections, int) or max_connections < 1
        ):
            raise ConfigError(f"max_connections must be an integer >= 1, not {max_connections!r}")
        limit = RateLimit.parse(rate_limit) if rate_limit is not None else None
        object.__setattr__(self, "server", server)
        object.__setattr__(self, "max_connections", max_connections)
        object.__setattr__(self, "rate_limit", limit)

    def __repr__(self) -> str:
        extra = ""
        if self.max_connections is not None:
            extra += f" max_connections={self.max_connections}"
        if self.rate_limit is not None:
            extra += f" rate_limit={self.rate_limit}"
        return f"<Relay {self.server.display}{extra}>"


def relays_of(servers: str | Server | Relay | Sequence[str | Server | Relay]) -> list[Relay]:
    """The relays a Mailer was given, checked before any I/O.

    Raises:
        ConfigError: None given, a value of the wrong type, or the same relay twice.
    """
    if isinstance(servers, str | Server | Relay):
        servers = [servers]
    elif not isinstance(servers, Sequence):
        kind = type(servers).__name__
        raise ConfigError(f"expected a URL, a Server or a list of them, not {kind}")
    if not servers:
        raise ConfigError("the list of relays is empty")
    relays = [s if isinstance(s, Relay) else Relay(s) for s in servers]
    seen: set[tuple[str, int, str | None]] = set()
    for relay in relays:
        server = relay.server
        key = (server.host.lower(), server.effective_port, server.username)
        if key in seen:
            raise ConfigError(f"relay {server.display} is given twice")
        seen.add(key)
    return relays


def check_strategy(strategy: object, retry_period: object) -> None:
    """Raises ConfigError for an unknown strategy or a retry period that is not > 0."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if (
        isinstance(retry_period, bool)
        or not isinstance(retry_period, int | float)
        or not math.isfinite(retry_period)
        or retry_period <= 0
    ):
        raise ConfigError(f"retry_period must be a number of seconds > 0, not {retry_period!r}")


@dataclass(frozen=True, slots=True)
class RelayStatistics:
    """A snapshot of one relay.

    Attributes:
        relay: The relay's display form (no password).
        up: False while the relay is marked down after a failure.
        pool: Its connection pool.
        delivered: Messages this relay took.
        failed: Messages that failed with this relay as the last one tried.
        unknown: Messages whose outcome on this relay is unknown.
        rate: Transactions per second allowed now (None: no limit).
        max_connections: Connections allowed now (lowered while throttled).
        throttled: Replies that said "too fast" so far.
    """

    relay: str
    up: bool
    pool: PoolStatistics
    delivered: int
    failed: int
    unknown: int
    rate: float | None
    max_connections: int
    throttled: int


class RelayState:
    """One relay at run time: its pool, pace, health and counts."""

    __slots__ = ("counts", "display", "down", "down_until", "own_rate", "pace", "pool", "server")

    def __init__(
        self,
        relay: Relay,
        limits: PoolLimits,
        timeouts: Timeouts,
        default_rate: RateLimit | None,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.server = relay.server
        self.display = relay.server.display
        self.pool = Pool(relay.server, limits, timeouts, clock=clock)
        self.own_rate = relay.rate_limit is not None  # (applies on top of an outbox's rate)
        rate = relay.rate_limit if relay.rate_limit is not None else default_rate
        self.pace = Pace(rate, clock=clock)
        self.down = False  # marked down after a failure, until a connection opens again
        self.down_until = 0.0  # when it may be tried again
        self.counts = dict.fromkeys(Status, 0)

    def throttle(self, reason: DeliveryError, now: float) -> None:
        """The relay said "too fast": slow it down (once per burst of such replies)."""
        pool = self.pool
        changed = self.pace.slow_down(now)
        if changed is None:
            return
        old, new = changed
        cap = pool.cap
        pool.lower_cap(max(1, min(cap, pool.open_count) // 2))
        logger.warning(
            "relay %s: throttled by the server (%s%s): rate %s -> %s, connections %d -> %d",
            self.display,
            f"{reason.code} " if reason.code is not None else "",
            _short(reason.text),
            format_rate(old),
            format_rate(new),
            cap,
            pool.cap,
        )

    def recover(self, now: float) -> None:
        """Raise a lowered rate again after a quiet period (the pool raises its cap itself)."""
        changed = self.pace.recover(now)
        if changed is not None:
            old, new = changed
            logger.info(
                "relay %s: not throttled for a while: rate %s -> %s, connections %d",
                self.display,
                format_rate(old),
                format_rate(new),
                self.pool.cap,
            )

    def statistics(self) -> RelayStatistics:
        counts = self.counts
        return RelayStatistics(
            relay=self.display,
            up=not self.down,
            pool=self.pool.statistics(),
            delivered=counts[Status.DELIVERED],
            failed=counts[Status.FAILED],
            unknown=counts[Status.UNKNOWN],
            rate=self.pace.rate,
            max_connections=self.pool.cap,
            throttled=self.pace.throttled,
        )

    def __repr__(self) -> str:
        return f"<RelayState {self.display} {'down' if self.down else 'up'}>"


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Relays:
    """The relays of a Mailer, and the choice of one for each new session."""

    def __init__(
        self,
        members: Sequence[RelayState],
        *,
        strategy: Strategy,
        retry_period: float,
        clock: Callable[[], float],
    ) -> None:
        self.members = tuple(members)
        self.strategy = strategy
        self.retry_period = retry_period
        self.clock = clock
        self.single: RelayState | None = self.members[0] if len(self.members) == 1 else None
        self._turn = 0  # round-robin: where the next search starts

    def pick(self, exclude: Sequence[RelayState] = ()) -> RelayState | None:
        """The relay for a new session, none of ``exclude``; None when all are excluded."""
        single = self.single
        if single is not None:
            return None if exclude else single
        now = self.clock()
        members = self.members
        if self.strategy == "failover":
            for relay in members:
                if relay.down_until <= now and relay not in exclude:
                    return relay
        else:
            count = len(members)
            start = self._turn
            # the next one in turn with a free connection; else the next one in turn
            for roomy in (True, False):
                for i in range(count):
                    relay = members[(start + i) % count]
                    if relay.down_until > now or relay in exclude:
                        continue
                    if roomy and not relay.pool.has_room():
                        continue
                    self._turn = (start + i + 1) % count
                    return relay
        waiting = [r for r in members if r not in exclude]
        if not waiting:
            return None
        return min(waiting, key=lambda r: r.down_until)  # all down: the first due again

    def mark_down(self, relay: RelayState, error: DeliveryError) -> None:
        """The relay failed to take a connection: skip it for ``retry_period`` seconds."""
        relay.down_until = self.clock() + self.retry_period
        if relay.down:
            logger.debug("relay %s still down: %s", relay.display, error)
            return
        relay.down = True
        if self.single is None:
            logger.warning(
                "relay %s is down (%s); skipping it for %g s",
                relay.display,
                error,
                self.retry_period,
            )

    def mark_up(self, relay: RelayState) -> None:
        """A connection to the relay opened: it is up again."""
        relay.down = False
        relay.down_until = 0.0
        if self.single is None:
            logger.info("relay %s is up again", relay.display)
