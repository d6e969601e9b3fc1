"""The Mailer: ``send()`` for one message, ``send_many()`` for a stream of them.

Each message ends with exactly one SendResult, through the one session driver
(``asyncmail.engine._driver``). Closing and cancelling:

- ``aclose()`` (or leaving ``async with``) stops new sends, wakes sends waiting in backoff
  (their result: FAILED, ``ShutdownError``), lets sends in flight finish up to
  ``close_timeout``, then drops the connections still busy or opening: a send before its
  final dot ends FAILED (``ShutdownError``), one after it UNKNOWN. Queued ``send_many``
  messages end FAILED (``ShutdownError``). Then idle connections say QUIT.
- Cancelling a ``send()`` raises the cancellation in the caller, at any phase; the
  connection it used is dropped, never reused, and the Mailer serves the next message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
from anyio.abc import TaskGroup

from .._config import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTION_AGE,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_MESSAGES_PER_CONNECTION,
    DEFAULT_POOL_TIMEOUT,
    PoolLimits,
    RetryPolicy,
    Server,
    Timeouts,
    is_local_url,
)
from .._exceptions import (
    ConfigError,
    DeliveryError,
    MailerClosedError,
    SendResult,
    Status,
    WrongEventLoopError,
)
from .._pool import Pool, PoolStatistics
from ..dkim._signer import DKIM, signers_of
from ..message._dsn import DSN
from ..message._message import Message
from ..message._raw import RawMessage
from ._driver import Driver
from ._job import BeforeSend, Job
from ._ledger import Ledger, Signal
from ._local import LocalDriver, Sink, sink_of
from ._ratelimit import Limiter, RateLimit
from ._relays import (
    DEFAULT_RETRY_PERIOD,
    Relay,
    Relays,
    RelayState,
    RelayStatistics,
    Strategy,
    check_strategy,
    relays_of,
)
from ._send_many import ResultStream

__all__ = ["Mailer", "MailerStatistics"]

logger = logging.getLogger("asyncmail")

AnyMessage = Message | RawMessage | EmailMessage
M = TypeVar("M", bound=AnyMessage)

DEFAULT_CLOSE_TIMEOUT = 30.0
#: After a close timed out and dropped the busy connections, how long their sends get to end.
ABORT_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class MailerStatistics:
    """A snapshot of a Mailer: outcomes so far, sends in flight, and the pool.

    With several relays ``pool`` adds up their pools, and ``relays`` has one entry each.
    """

    delivered: int
    failed: int
    unknown: int
    in_flight: int
    pool: PoolStatistics
    relays: tuple[RelayStatistics, ...] = ()


class _One:
    """The feed of ``send()``: one job, one result."""

    before_send: BeforeSend | None = None
    retry: RetryPolicy | None = None
    limiter: Limiter | None = None

    def __init__(self, job: Job) -> None:
        self._job: Job | None = job
        self.result: SendResult[Any] | None = None

    async def next(self) -> Job | None:
        job, self._job = self._job, None
        return job

    def ready(self) -> Job | None:
        return None

    async def emit(self, result: SendResult[Any]) -> None:
        self.result = result


class Mailer:
    """Sends mail through a pool of SMTP connections to one server, or to several relays.

    Args:
        server: An ``smtp://``/``smtps://`` URL or a ``Server``; by default ``ASYNCMAIL_URL``.
            Or a list of them (and of ``Relay`` values, for limits of their own): the
            relays, each with its own pool, rate limit and statistics. Or, for development
            and tests, a backend without a server or socket (``asyncmail.engine._local``):
            ``"memory://"`` keeps each message in ``asyncmail.testing.outbox``,
            ``"console://"`` prints it to standard output, ``"file:///path/to/dir"``
            writes it to an ``.eml`` file there, ``"null://"`` discards it.
        strategy: With several relays, ``"failover"`` uses the first one that is up,
            ``"round-robin"`` takes turns among those that are up.
        retry_period: Seconds a relay that failed (connect, TLS, AUTH, greeting) is
            skipped before it is tried again.
        max_connections: Open connections at most (per relay).
        max_messages_per_connection: Transactions before a connection is retired.
        idle_timeout: Seconds an idle connection is kept.
        max_connection_age: Seconds after which a connection is retired.
        pool_timeout: Seconds a send waits for a free connection.
        timeouts: Per-phase timeouts.
        retry: The retry policy for transient failures; ``RetryPolicy(attempts=1)`` for none.
        rate_limit: Transactions at most, such as ``"14/s"``, shared by all connections
            and enforced before each transaction starts (per relay).
        pipelining: Use PIPELINING (RFC 2920) when the server offers it.
        chunking: Send by BDAT (CHUNKING, RFC 3030) when the server offers it together
            with PIPELINING: several messages in flight per connection, none waiting for
            a 354. ``False`` keeps to DATA (so does ``?chunking=no`` in a server's URL).
        chunking_window: Messages in flight per connection with BDAT. Should a
            connection die, each one whose content had left ends UNKNOWN, so a larger
            window trades more of those for fewer round trips; 1 is like DATA.
        close_timeout: Seconds ``aclose()`` lets in-flight sends finish.
        dsn: The delivery status notifications (RFC 3461) to ask for, for each message
            without a ``dsn`` of its own (a stdlib ``EmailMessage`` has none); sent only to
            a server that offers DSN.
        dkim: Sign every message with this DKIM signer, or each of these (dual signing:
            RSA and Ed25519), once, over the bytes that go out; a retry sends the same
            signature.

    Use it as an async context manager, typically once per application::

        async with Mailer("smtp://user:pass@smtp.example.com") as mailer:
            result = await mailer.send(message)
    """

    def __init__(
        self,
        server: str | Server | Relay | Sequence[str | Server | Relay] | None = None,
        /,
        *,
        strategy: Strategy = "failover",
        retry_period: float = DEFAULT_RETRY_PERIOD,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_messages_per_connection: int = DEFAULT_MAX_MESSAGES_PER_CONNECTION,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_connection_age: float = DEFAULT_MAX_CONNECTION_AGE,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: str | RateLimit | None = None,
        pipelining: bool = True,
        chunking: bool = True,
        chunking_window: int = 8,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        dsn: DSN | None = None,
        dkim: DKIM | Sequence[DKIM] | None = None,
    ) -> None:
        sink = _local_sink(server)
        relays = (
            [] if sink is not None else relays_of(Server.from_env() if server is None else server)
        )
        check_strategy(strategy, retry_period)
        self._server = relays[0].server if relays else None  # (the first relay)
        self.relays = tuple(relays)
        self.strategy = strategy
        self.retry_period = float(retry_period)
        self.limits = PoolLimits(
            max_connections=max_connections,
            max_messages_per_connection=max_messages_per_connection,
            idle_timeout=idle_timeout,
            max_connection_age=max_connection_age,
            pool_timeout=pool_timeout,
        )
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.rate_limit = RateLimit.parse(rate_limit) if rate_limit is not None else None
        self.pipelining = pipelining
        if not isinstance(chunking_window, int) or not 1 <= chunking_window <= 1000:
            raise ConfigError(f"chunking_window must be 1..1000, not {chunking_window!r}")
        self.chunking = chunking
        self.chunking_window = chunking_window
        self.close_timeout = close_timeout
        if dsn is not None and not isinstance(dsn, DSN):
            raise ConfigError(f"dsn must be a DSN, not {type(dsn).__name__}")
        self.dsn = dsn
        members = [
            RelayState(
                relay,
                self.limits
                if relay.max_connections is None
                else replace(self.limits, max_connections=relay.max_connections),
                self.timeouts,
                self.rate_limit,
                clock=time.monotonic,
            )
            for relay in relays
        ]
        self._relays = Relays(
            members, strategy=strategy, retry_period=self.retry_period, clock=time.monotonic
        )
        self._pools: tuple[Pool, ...] = tuple(r.pool for r in members)
        signers = signers_of(dkim)
        self.dkim = signers.dkim if signers is not None else ()
        self._ledger = Ledger()
        self._closing = Signal()
        self._local: LocalDriver | None = None
        if sink is not None:
            self._local = LocalDriver(
                sink, ledger=self._ledger, closing=self._closing, dsn=dsn, sign=signers
            )
        self._driver = self._local or Driver(
            self._relays,
            retry=self.retry,
            pipelining=pipelining,
            ledger=self._ledger,
            closing=self._closing,
            clock=time.monotonic,
            dsn=dsn,
            sign=signers,
            chunking=chunking,
            window=chunking_window,
        )
        self._task_group: TaskGroup | None = None
        self._state = "new"
        self._loop: asyncio.AbstractEventLoop | None = None  # the one it was opened in

    @property
    def server(self) -> Server:
        """The server of the (first) relay.

        Raises:
            ConfigError: The Mailer has a backend without a server (``memory://``...).
        """
        if self._server is None:
            raise ConfigError(f"a {self.statistics().relays[0].relay} Mailer has no server")
        return self._server

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise MailerClosedError("a Mailer can be entered once; create a new one")
        self._loop = asyncio.get_running_loop()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        for pool in self._pools:
            pool.background = self._task_group
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()  # (this waits for the pool's background QUITs too)
        for pool in self._pools:
            pool.background = None
        task_group, self._task_group = self._task_group, None
        if task_group is not None:
            # stop any send_many() still running, and keep the body's own exception as it
            # is: it must not come out wrapped in an ExceptionGroup
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(None, None, None)
        for pool in self._pools:
            pool.abort_all()  # (anything a cancelled task never closed)
        return None

    async def aclose(self) -> None:
        """Stop new sends, let those in flight finish (up to ``close_timeout``), QUIT idle ones.

        See the module documentation for what each send in progress ends with.
        """
        if self._state == "closed":
            return
        self._state = "closed"
        self._closing.set()
        with anyio.CancelScope(shield=True):
            if not await self._ledger.wait_idle(self.close_timeout):
                logger.warning(
                    "closing with %d send(s) still in flight after %s s: dropping them",
                    self._ledger.in_flight,
                    self.close_timeout,
                )
                for pool in self._pools:
                    pool.abort_busy()
                await self._ledger.wait_idle(ABORT_GRACE)
            for pool in self._pools:
                await pool.aclose()

    def _check_open(self) -> None:
        if self._state == "closed":
            raise MailerClosedError("the Mailer is closed")
        loop = self._loop
        if loop is not _running_loop() and loop is not None:
            raise _wrong_loop()

    # -- sending ----------------------------------------------------------------------------

    async def send(self, message: M) -> SendResult[M]:
        """Send one message.

        Returns:
            The result, when at least one recipient accepted it; refused recipients are
            listed in ``result.refused``.

        Raises:
            MessageError: The message is invalid (raised before any network I/O).
            DeliveryError: Nothing was delivered, or the outcome is unknown; the
                exception's ``result`` holds the SendResult. ``ShutdownError`` when the
                Mailer closed first.
            MailerClosedError: The Mailer was already closed.
        """
        self._check_open()
        feed = _One(Job.of(message, sign=self._driver.sign))
        self._ledger.admit()
        await self._driver.serve(feed)
        result = feed.result
        assert result is not None
        if result.status is Status.DELIVERED:
            return result
        error = result.error
        assert isinstance(error, DeliveryError)
        raise error

    async def send_raw(
        self,
        data: bytes | bytearray | memoryview,
        *,
        sender: str,
        recipients: str | Iterable[str],
        dsn: DSN | None = None,
        dkim: bool = False,
        resent_from: str | None = None,
    ) -> SendResult[RawMessage]:
        """Send existing message bytes as they are (forwarding): ``send(RawMessage(...))``.

        Only bare LF line ends become CRLF; the header fields are not read for the
        envelope, which is ``sender`` and ``recipients``. See ``RawMessage`` for the
        arguments and for what is refused before any I/O.

        Raises:
            MessageError: The bytes or an address cannot go unchanged.
            DeliveryError: As ``send``; ``NotSupportedError`` for 8-bit content and a
                server without 8BITMIME, or a non-ASCII address and one without SMTPUTF8.
        """
        message = RawMessage(
            data,
            sender=sender,
            recipients=recipients,
            dsn=dsn,
            dkim=dkim,
            resent_from=resent_from,
        )
        return await self.send(message)

    def send_many(
        self,
        messages: Iterable[M] | AsyncIterable[M],
        *,
        concurrency: int | None = None,
        before_send: Callable[[M], object] | None = None,
    ) -> ResultStream[M]:
        """Send a stream of messages; one SendResult per input, in completion order.

        The input is consumed lazily, a message only when a worker can send it (an async
        iterable through a bounded queue), so memory stays flat for any number of
        messages. One message's failure never raises: it is a result.
        Use it as ``async for result in mailer.send_many(msgs)``, or, to keep its tasks
        in your own task, ``async with mailer.send_many(msgs) as results``.

        Args:
            messages: An iterable or async iterable of messages.
            concurrency: Workers, each sending on one connection at a time; by default
                ``max_connections`` (round-robin: added up over the relays). With
                PIPELINING a worker writes the next message's envelope behind the current
                message's final dot, so up to twice this many messages can be on their way
                at once; with CHUNKING (BDAT) each worker keeps up to ``chunking_window``
                messages in flight.
            before_send: Called with each message right before its first transaction
                starts (for a write-ahead journal). If it raises, that message is not
                sent and ends FAILED, with the exception as the error's ``__cause__``.
        """
        self._check_open()
        workers = concurrency if concurrency is not None else self._max_connections()
        if not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"concurrency must be an integer >= 1, not {concurrency!r}")
        return ResultStream(
            self._driver,
            messages,
            workers=workers,
            before_send=before_send,
            host=self._task_group,
        )

    @property
    def driver(self) -> Driver:
        """The session driver, for feeds built above the engine (the outbox's workers).

        Raises:
            MailerClosedError: The Mailer is not open.
        """
        if self._state != "open":
            raise MailerClosedError("the Mailer is not open: use it in 'async with'")
        self._check_open()
        return self._driver

    def _max_connections(self) -> int:
        """Connections open at once at most: over all relays taking turns, over the largest
        one for failover (one relay at a time); one worker for a local backend."""
        if self._local is not None:
            return 1
        sizes = [pool.limits.max_connections for pool in self._pools]
        return sum(sizes) if self.strategy == "round-robin" else max(sizes)

    # -- introspection ----------------------------------------------------------------------

    def statistics(self) -> MailerStatistics:
        """A frozen snapshot of outcomes, sends in flight, the pools and each relay."""
        counts = self._ledger.counts
        if self._local is not None:
            relays: tuple[RelayStatistics, ...] = (self._local.statistics(),)
        else:
            relays = tuple(r.statistics() for r in self._relays.members)
        pool = relays[0].pool if len(relays) == 1 else _added(r.pool for r in relays)
        return MailerStatistics(
            delivered=counts[Status.DELIVERED],
            failed=counts[Status.FAILED],
            unknown=counts[Status.UNKNOWN],
            in_flight=self._ledger.in_flight,
            pool=pool,
            relays=relays,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        more = f" (+{len(self.relays) - 1} relays)" if len(self.relays) > 1 else ""
        pool = f" pool={s.pool.busy}/{s.pool.idle}/{s.pool.max_connections} busy/idle/max"
        return (
            f"<Mailer {s.relays[0].relay}{more} {self._state} in_flight={s.in_flight} "
            f"delivered={s.delivered} failed={s.failed} unknown={s.unknown}"
            f"{pool if self._local is None else ''}>"
        )


def _local_sink(server: object) -> Sink | None:
    """The sink of a local backend URL (given, or in ``ASYNCMAIL_URL``); None for SMTP.

    Raises:
        ConfigError: A local URL in a list of relays, or a local URL that is not valid.
    """
    if server is None:
        server = os.environ.get("ASYNCMAIL_URL")
    if isinstance(server, str):
        return sink_of(server) if is_local_url(server) else None
    if isinstance(server, Sequence) and any(is_local_url(s) for s in server):
        raise ConfigError(
            "memory://, console://, file:// and null:// cannot be mixed with other relays: "
            "give the Mailer that one URL alone"
        )
    return None


#: The running event loop, or None outside one (where ``get_running_loop`` raises).
_running_loop = asyncio._get_running_loop  # noqa: SLF001


def _wrong_loop() -> WrongEventLoopError:
    return WrongEventLoopError(
        "this Mailer was opened in another event loop (each asyncio.run() makes a new one) "
        "and cannot be used in this one: create the Mailer inside the event loop that uses "
        "it; from synchronous code (scripts, Flask, Django, Celery), use asyncmail.SyncMailer, "
        "which keeps one Mailer in an event loop of its own"
    )


def _added(pools: Iterable[PoolStatistics]) -> PoolStatistics:
    """The pools of several relays as one."""
    total = [0] * 7
    for p in pools:
        values = (p.max_connections, p.idle, p.busy, p.connecting, p.waiting, p.opened, p.closed)
        total = [a + b for a, b in zip(total, values, strict=True)]
    return PoolStatistics(*total)
