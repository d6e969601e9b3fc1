"""The Mailer: ``send()`` for one message, ``send_many()`` for a stream of them.

Each message ends with exactly one SendResult. Transient failures are retried with
backoff, only for the recipients that still need it; permanent failures never are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Self

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
)
from .._exceptions import (
    ConfigError,
    DeliveryError,
    MailerClosedError,
    MailError,
    MessageError,
    NotSupportedError,
    PermanentError,
    Phase,
    SendResult,
    Status,
)
from .._pool import Pool, PoolStatistics
from ..message._envelope import envelope_of, smtp_address
from ..message._message import Message
from ..smtp._connection import Connection
from ..smtp._transaction import Attempt, Prepared, prepare, reset, run
from ._job import Job
from ._ratelimit import RateLimit, RateLimiter
from ._retry import backoff_delay, may_retry
from ._workers import Worker, put, take

__all__ = ["Mailer", "MailerStatistics"]

logger = logging.getLogger("asyncmail")

AnyMessage = Message | EmailMessage
BeforeSend = Callable[[Any], object]

DEFAULT_CLOSE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class MailerStatistics:
    """A snapshot of a Mailer: outcomes so far, sends in flight, and the pool."""

    delivered: int
    failed: int
    unknown: int
    in_flight: int
    pool: PoolStatistics


class Mailer:
    """Sends mail through a pool of SMTP connections to one server.

    Args:
        server: An ``smtp://``/``smtps://`` URL or a ``Server``; by default ``ASYNCMAIL_URL``.
        max_connections: Open connections at most.
        max_messages_per_connection: Transactions before a connection is retired.
        idle_timeout: Seconds an idle connection is kept.
        max_connection_age: Seconds after which a connection is retired.
        pool_timeout: Seconds a send waits for a free connection.
        timeouts: Per-phase timeouts.
        retry: The retry policy for transient failures; ``RetryPolicy(attempts=1)`` for none.
        rate_limit: Transactions at most, such as ``"14/s"``, shared by all connections
            and enforced before each transaction starts.
        pipelining: Use PIPELINING (RFC 2920) when the server offers it.
        close_timeout: Seconds ``aclose()`` lets in-flight sends finish.

    Use it as an async context manager, typically once per application::

        async with Mailer("smtp://user:pass@smtp.example.com") as mailer:
            result = await mailer.send(message)
    """

    def __init__(
        self,
        server: str | Server | None = None,
        /,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_messages_per_connection: int = DEFAULT_MAX_MESSAGES_PER_CONNECTION,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_connection_age: float = DEFAULT_MAX_CONNECTION_AGE,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: str | RateLimit | None = None,
        pipelining: bool = True,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        if server is None:
            server = Server.from_env()
        elif isinstance(server, str):
            server = Server.from_url(server)
        elif not isinstance(server, Server):
            raise ConfigError(f"expected a URL or a Server, not {type(server).__name__}")
        self.server = server
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
        self.close_timeout = close_timeout
        self._limiter = RateLimiter(self.rate_limit) if self.rate_limit else None
        self._pool = Pool(server, self.limits, self.timeouts)
        self._task_group: TaskGroup | None = None
        self._in_flight = 0
        self._idle_event: asyncio.Event | None = None
        self._counts = {Status.DELIVERED: 0, Status.FAILED: 0, Status.UNKNOWN: 0}
        self._state = "new"

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise MailerClosedError("a Mailer can be entered once; create a new one")
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._pool.background = self._task_group
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()  # (this waits for the pool's background QUITs too)
        self._pool.background = None
        task_group, self._task_group = self._task_group, None
        if task_group is not None:
            # stop any send_many() still running, and keep the body's own exception as it
            # is: it must not come out wrapped in an ExceptionGroup
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(None, None, None)
        return None

    async def aclose(self) -> None:
        """Let in-flight sends finish (up to ``close_timeout``), QUIT idle connections."""
        if self._state == "closed":
            return
        self._state = "closed"
        with anyio.CancelScope(shield=True):
            if self._in_flight:
                self._idle_event = asyncio.Event()
                with anyio.move_on_after(self.close_timeout):
                    await self._idle_event.wait()
                if self._in_flight:
                    logger.warning(
                        "closing with %d send(s) still in flight after %s s",
                        self._in_flight,
                        self.close_timeout,
                    )
                    self._pool.abort_busy()
            await self._pool.aclose()

    def _check_open(self) -> None:
        if self._state == "closed":
            raise MailerClosedError("the Mailer is closed")

    # -- sending ----------------------------------------------------------------------------

    async def send(self, message: AnyMessage) -> SendResult:
        """Send one message.

        Returns:
            The result, when at least one recipient accepted it; refused recipients are
            listed in ``result.refused``.

        Raises:
            MessageError: The message is invalid (raised before any network I/O).
            DeliveryError: Nothing was delivered, or the outcome is unknown; the
                exception's ``result`` holds the SendResult.
            MailerClosedError: The Mailer was closed.
        """
        self._check_open()
        job = Job(message, envelope_of(message))
        self._in_flight += 1
        result = await self._deliver(job, None)
        if result.status is Status.DELIVERED:
            return result
        error = result.error
        assert isinstance(error, DeliveryError)
        error.result = result
        raise error

    async def send_many(
        self,
        messages: Iterable[AnyMessage] | AsyncIterable[AnyMessage],
        *,
        concurrency: int | None = None,
        before_send: BeforeSend | None = None,
    ) -> AsyncIterator[SendResult]:
        """Send a stream of messages; yield one SendResult per input, in completion order.

        The input is consumed lazily through a bounded queue, so memory stays flat for
        any number of messages. One message's failure never raises: it is a result.

        Args:
            messages: An iterable or async iterable of messages.
            concurrency: Workers, each sending on one connection at a time; by default
                ``max_connections``. With PIPELINING a worker writes the next message's
                envelope behind the current message's final dot, so up to twice this many
                messages can be on their way at once.
            before_send: Called with each message right before its first transaction
                starts (for a write-ahead journal).
        """
        self._check_open()
        if self._task_group is None:
            raise MailerClosedError("send_many() needs the Mailer open: use 'async with Mailer()'")
        workers = concurrency if concurrency is not None else self.limits.max_connections
        if not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"concurrency must be an integer >= 1, not {concurrency!r}")
        work_send, work_receive = anyio.create_memory_object_stream[Any](workers)
        result_send, result_receive = anyio.create_memory_object_stream[SendResult](workers)
        failure: list[BaseException] = []
        scope = anyio.CancelScope()

        async def feed() -> None:
            async with work_send:
                try:
                    if isinstance(messages, AsyncIterable):
                        async for message in messages:
                            await put(work_send, message)
                            if self._state == "closed":
                                break
                    else:
                        for message in messages:
                            await put(work_send, message)
                            if self._state == "closed":
                                break  # what is queued ends FAILED (MailerClosedError)
                except Exception as exc:  # the caller's iterable failed
                    failure.append(exc)

        async def run() -> None:
            with scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(feed)
                    for _ in range(workers):
                        worker = Worker(
                            self, work_receive.clone(), result_send.clone(), before_send
                        )
                        tg.start_soon(worker.run)
                    work_receive.close()
                    result_send.close()

        self._task_group.start_soon(run)
        try:
            while True:
                try:
                    result = await take(result_receive)
                except anyio.EndOfStream:
                    break
                yield result
        finally:
            scope.cancel()  # first, so workers stop at their next await...
            result_receive.close()  # ...and one already past it stops on BrokenResourceError
        if failure:
            raise failure[0]

    def _job(self, message: Any) -> Job | SendResult:
        """A Job for the message, or the FAILED result of invalid input or a closed Mailer."""
        self._in_flight += 1
        try:
            if self._state == "closed":
                raise MailerClosedError("the Mailer was closed before this message was sent")
            return Job(message, envelope_of(message))
        except (MessageError, MailerClosedError) as exc:
            return self._finish(SendResult(message=message, status=Status.FAILED, error=exc))

    def _finish(self, result: SendResult) -> SendResult:
        """Count a final result and mark its message as no longer in flight."""
        self._counts[result.status] += 1
        self._in_flight -= 1
        if not self._in_flight and self._idle_event is not None:
            self._idle_event.set()
        return result

    async def _deliver(
        self,
        job: Job,
        before_send: BeforeSend | None,
        first: Attempt | None = None,
        retry: list[str] | None = None,
    ) -> SendResult:
        """Attempt the job until it settles.

        Args:
            job: The message's state.
            before_send: Called before the message's first transaction.
            first: An attempt already made (by a send_many worker), with ``retry`` the
                recipients it left open, as ``Job.settle`` returned them. A stale first
                attempt is not booked: it is repeated at once on a fresh connection.
        """
        policy = self.retry
        attempt = first
        fresh = False
        if attempt is not None and attempt.stale:
            job.attempts -= 1
            attempt, fresh = None, True
        try:
            while True:
                if attempt is None:
                    if self._limiter is not None:
                        await self._limiter.acquire()
                    job.announce(before_send)
                    job.begin()
                    attempt = await self._attempt(job, fresh=fresh)
                    fresh = False
                    retry = job.settle(attempt, retry_unknown=policy.retry_unknown)
                if retry:
                    delay = backoff_delay(policy, job.attempts)
                    if may_retry(policy, job.attempts, time.monotonic() - job.started, delay):
                        logger.debug("retry %d in %.2f s: %s", job.attempts, delay, attempt.error)
                        job.pending = retry
                        attempt = None
                        await anyio.sleep(delay)
                        continue
                return self._finish(job.result(attempt, retry or []))
        except MailError as exc:  # a failure outside any transaction: still one outcome
            return self._finish(SendResult(message=job.message, status=Status.FAILED, error=exc))
        except Exception as exc:  # a bug must not lose the message's outcome
            logger.exception("unexpected error while sending")
            error = PermanentError(f"internal error: {exc!r}")
            return self._finish(SendResult(message=job.message, status=Status.FAILED, error=error))
        except BaseException:  # cancelled: the caller gets no result, so nothing is counted
            self._in_flight -= 1
            raise

    async def _attempt(self, job: Job, *, fresh: bool = False) -> Attempt:
        """One transaction; a stale pooled connection is retried once on a fresh one."""
        while True:
            try:
                conn = await self._pool.acquire(fresh=fresh)
            except DeliveryError as exc:
                return Attempt(Status.FAILED, error=exc, reusable=False)
            reusable = False
            try:
                tx = self.prepare(conn, job)
                attempt = tx if isinstance(tx, Attempt) else await run(conn, tx)
                if attempt.needs_rset and attempt.reusable:
                    attempt.reusable = await reset(conn)
                reusable = attempt.reusable
            finally:
                await self._pool.release(conn, reusable=reusable)
            if attempt.stale and not fresh:
                logger.debug("connection %d was stale; retrying on a fresh one", conn.id)
                fresh = True
                continue
            return attempt

    def prepare(self, conn: Connection, job: Job) -> Prepared | Attempt:
        """The job's next transaction on ``conn``, or the Attempt that ends it before I/O."""
        envelope = job.envelope
        smtputf8 = envelope.needs_smtputf8
        if smtputf8 and not conn.supports("smtputf8"):
            error = NotSupportedError(
                "the message has a non-ASCII address but the server does not offer SMTPUTF8",
                phase=Phase.MAIL,
            )
            return Attempt(Status.FAILED, error=error)
        try:
            sender = smtp_address(envelope.sender, smtputf8=smtputf8) if envelope.sender else ""
            rcpts = [(r, smtp_address(r, smtputf8=smtputf8)) for r in job.pending]
            content = job.content_for(smtputf8)
        except MessageError as exc:
            return Attempt(Status.FAILED, error=NotSupportedError(str(exc), phase=Phase.MAIL))
        pipelining = self.pipelining and conn.supports("pipelining")
        return prepare(conn, sender, rcpts, content, smtputf8=smtputf8, pipelining=pipelining)

    # -- introspection ----------------------------------------------------------------------

    def statistics(self) -> MailerStatistics:
        """A frozen snapshot of outcomes, sends in flight and the pool."""
        return MailerStatistics(
            delivered=self._counts[Status.DELIVERED],
            failed=self._counts[Status.FAILED],
            unknown=self._counts[Status.UNKNOWN],
            in_flight=self._in_flight,
            pool=self._pool.statistics(),
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<Mailer {self.server.display} {self._state} in_flight={s.in_flight} "
            f"delivered={s.delivered} failed={s.failed} unknown={s.unknown} "
            f"pool={s.pool.busy}/{s.pool.idle}/{s.pool.max_connections} busy/idle/max>"
        )
