"""The one session driver: ``send()`` and every ``send_many()`` worker deliver through it.

``Driver.serve(feed)`` takes jobs from a feed and carries each to its single result. For
each job it acquires a connection, waits for the rate limiter, calls the write-ahead hook,
runs the transaction, RSETs a connection a failed transaction left open, retries once on
a fresh connection when a reused one turns out stale, chains the next ready job behind
the final dot (PIPELINING), and releases the connection, shielded, in a known state.
A job that needs another attempt waits out its backoff in the same ``serve`` (so the
messages in backoff are bounded by the workers), and closing the Mailer cuts that wait
short. ``send()`` is a feed of one job.

Nothing but cancellation leaves ``serve``: every job ends in exactly one result handed to
``feed.emit``, and a cancelled job leaves the ledger without one.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import anyio

from .._config import RetryPolicy
from .._exceptions import (
    DeliveryError,
    MailerClosedError,
    NotSupportedError,
    Phase,
    SendResult,
    ShutdownError,
)
from .._pool import Pool
from ..message._envelope import smtp_address
from ..smtp._connection import Connection
from ..smtp._judge import Attempt, failed
from ..smtp._transaction import Prepared, prepare, reset, run
from ._job import BeforeSend, Job, Sign
from ._ledger import Ledger, Signal
from ._ratelimit import Limiter
from ._retry import backoff_delay, may_retry

__all__ = ["Driver", "Feed"]

logger = logging.getLogger("asyncmail")


class Feed(Protocol):
    """Where a ``serve`` gets its jobs and puts its results."""

    before_send: BeforeSend | None
    retry: RetryPolicy | None
    """This feed's retry policy instead of the Mailer's (the outbox keeps its own schedule)."""
    limiter: Limiter | None
    """This feed's rate limiter instead of the Mailer's (the outbox's is shared by workers)."""

    async def next(self) -> Job | None:
        """The next job, waiting for one; None when there are no more."""

    def ready(self) -> Job | None:
        """The next job if one is waiting now, else None; never waits."""

    async def emit(self, result: SendResult[Any]) -> None:
        """Hand a final result on."""


@dataclass(slots=True)
class _Run:
    """The state of one ``serve``: jobs waiting to retry, and jobs without a result yet."""

    feed: Feed
    retries: deque[Job]
    held: set[Job]


class Driver:
    """Delivers jobs over a pool's connections; one per Mailer, shared by all its sends."""

    def __init__(
        self,
        pool: Pool,
        *,
        retry: RetryPolicy,
        limiter: Limiter | None,
        pipelining: bool,
        ledger: Ledger,
        closing: Signal,
        clock: Callable[[], float] = time.monotonic,
        sign: Sign | None = None,
    ) -> None:
        self.pool = pool
        self.sign = sign  # the Mailer's DKIM signers, for the jobs its feeds make
        self.retry = retry
        self.limiter = limiter
        self.pipelining = pipelining
        self.ledger = ledger
        self.closing = closing
        self.clock = clock

    async def serve(self, feed: Feed) -> None:
        """Deliver every job the feed gives, until it gives None."""
        state = _Run(feed, deque(), set())
        try:
            while True:
                if state.retries:
                    job = state.retries.popleft()
                    if not await self._backoff(job):
                        await self._finish(state, job, shutdown=True)
                        continue
                else:
                    next_job = await feed.next()
                    if next_job is None:
                        return
                    job = next_job
                    state.held.add(job)
                await self._session(state, job)
        finally:
            for _ in state.held:  # cancelled: these get no result
                self.ledger.abandon()
            state.held.clear()

    async def _backoff(self, job: Job) -> bool:
        """Wait until the job may be retried; False when the Mailer closes first."""
        delay = job.due - self.clock()
        if delay > 0 and not self.closing.fired:
            with anyio.move_on_after(delay):
                await self.closing.wait()
        return not self.closing.fired

    async def _session(self, state: _Run, job: Job) -> None:
        """Acquire a connection, run the job and what follows it, release the connection."""
        fresh = False
        redo: Job | None = job
        while redo is not None:
            job, redo = redo, None
            try:
                conn = await self.pool.acquire(fresh=fresh)
            except (DeliveryError, MailerClosedError) as exc:
                job.begin(self.clock())
                error = exc if isinstance(exc, DeliveryError) else _shutdown()
                await self._settle(state, job, failed(job.pending, error, reusable=False))
                return
            clean = False
            try:
                redo, clean = await self._chain(state, conn, job)
            finally:  # (release shields what it must await: a cancel cannot skip it)
                await self.pool.release(conn, reusable=clean)
            fresh = True  # a stale connection is replaced once, by a new one

    async def _chain(self, state: _Run, conn: Connection, job: Job) -> tuple[Job | None, bool]:
        """Run ``job`` and the ready jobs after it on ``conn``.

        Returns:
            A job to run again on a fresh connection (``conn`` was stale), and whether
            ``conn`` is in a known-clean state.
        """
        first = True
        group_sent = False
        tx: Prepared | Attempt | None = self._prepare(conn, job)
        while True:
            chained: list[tuple[Job, Prepared | Attempt | None]] = []
            attempt = await self._one(state, conn, job, tx, group_sent, chained)
            if attempt is not None:
                if attempt.stale and first:
                    job.unbook()
                    logger.debug("connection %d was stale; retrying on a fresh one", conn.id)
                    return job, False
                await self._settle(state, job, attempt)
                if not attempt.reusable:
                    await self._requeue(state, chained)
                    return None, False
            if chained:
                job, tx = chained[0]
                group_sent = isinstance(tx, Prepared)
            else:
                nxt = self._ready(state, conn)
                if nxt is None:
                    return None, True
                job, tx, group_sent = nxt, self._prepare(conn, nxt), False
            first = False

    async def _one(
        self,
        state: _Run,
        conn: Connection,
        job: Job,
        tx: Prepared | Attempt | None,
        group_sent: bool,
        chained: list[tuple[Job, Prepared | Attempt | None]],
    ) -> Attempt | None:
        """One job's transaction on ``conn``; None when it ended without one (hook failed)."""
        if tx is None:  # its write-ahead hook failed when it was to be chained
            await self._finish(state, job)
            return None
        if isinstance(tx, Attempt):  # refused before any I/O
            job.begin(self.clock())
            return tx
        if not group_sent and not await self._start(state, job):
            return None  # the write-ahead hook failed: the job already has its result
        follow = self._follower(state, conn, chained) if tx.pipelined else None
        attempt = await run(conn, tx, group_sent=group_sent, follow=follow, gate=job.gate)
        if attempt.needs_rset and attempt.reusable:
            attempt = replace(attempt, reusable=await reset(conn))
        return attempt

    async def _requeue(
        self, state: _Run, chained: list[tuple[Job, Prepared | Attempt | None]]
    ) -> None:
        """The connection ended under jobs chained behind: they go first on the next one."""
        for following, ftx in chained:
            if ftx is None:
                await self._finish(state, following)
                continue
            if isinstance(ftx, Prepared):  # its group went nowhere: not an attempt
                following.unbook()
            following.due = self.clock()
            state.retries.appendleft(following)

    def _ready(self, state: _Run, conn: Connection) -> Job | None:
        """The next job to run on ``conn`` now, if one is waiting and ``conn`` may take it."""
        wire = conn.wire
        if state.retries or self.closing.fired or not conn.has_room():
            return None
        if wire is None or wire.has_unread:  # an extra reply: the session is out of step
            return None
        job = state.feed.ready()
        if job is not None:
            state.held.add(job)
        return job

    def _follower(
        self,
        state: _Run,
        conn: Connection,
        chained: list[tuple[Job, Prepared | Attempt | None]],
    ) -> Callable[[], bytes | None]:
        """What ``run`` calls once the content has left: the next job's group, if any."""

        def follow() -> bytes | None:
            if self._limiter(state) is not None or state.retries or self.closing.fired or chained:
                return None
            if not conn.has_room():
                return None
            job = state.feed.ready()
            if job is None:
                return None
            state.held.add(job)
            tx: Prepared | Attempt | None = self._prepare(conn, job)
            if isinstance(tx, Prepared):
                try:
                    job.announce(state.feed.before_send)
                except DeliveryError as exc:
                    job.fail(exc)  # not sent: its result is handed on after this transaction
                    tx = None
            chained.append((job, tx))
            if not isinstance(tx, Prepared):
                return None
            job.begin(self.clock())
            return tx.group

        return follow

    async def _start(self, state: _Run, job: Job) -> bool:
        """Before a job's transaction: the write-ahead hook and the rate limit."""
        try:
            job.announce(state.feed.before_send)
        except DeliveryError as exc:
            job.fail(exc)
            await self._finish(state, job)
            return False
        limiter = self._limiter(state)
        if limiter is not None:
            await limiter.acquire()
        job.begin(self.clock())
        return True

    def _limiter(self, state: _Run) -> Limiter | None:
        feed_limiter = state.feed.limiter
        return self.limiter if feed_limiter is None else feed_limiter

    def _prepare(self, conn: Connection, job: Job) -> Prepared | Attempt:
        """The job's next transaction on ``conn``, or the Attempt that ends it before I/O."""
        envelope = job.envelope
        smtputf8 = envelope.needs_smtputf8
        if smtputf8 and not conn.supports("smtputf8"):
            error = NotSupportedError(
                "the message has a non-ASCII address but the server does not offer SMTPUTF8",
                phase=Phase.MAIL,
            )
            return failed(job.pending, error)
        # (valid: checked, and rendered for a server with 8BITMIME, when the job was made)
        sender = smtp_address(envelope.sender, smtputf8=smtputf8) if envelope.sender else ""
        rcpts = [(r, smtp_address(r, smtputf8=smtputf8)) for r in job.pending]
        try:
            content = job.content_for(smtputf8=smtputf8, eightbitmime=conn.supports("8bitmime"))
        except NotSupportedError as exc:
            return failed(job.pending, exc)
        pipelining = self.pipelining and conn.supports("pipelining")
        return prepare(conn, sender, rcpts, content, pipelining=pipelining)

    async def _settle(self, state: _Run, job: Job, attempt: Attempt) -> None:
        """Book an attempt: schedule the job's retry, or hand on its result."""
        policy = state.feed.retry or self.retry
        retry = job.settle(attempt, retry_unknown=policy.retry_unknown)
        if retry:
            if self.closing.fired:
                await self._finish(state, job, shutdown=True)
                return
            now = self.clock()
            delay = backoff_delay(policy, job.attempts)
            if may_retry(policy, job.attempts, now - job.started, delay):
                logger.debug("retry %d in %.2f s: %s", job.attempts, delay, attempt.error)
                job.due = now + delay
                state.retries.append(job)
                return
        await self._finish(state, job)

    async def _finish(self, state: _Run, job: Job, *, shutdown: bool = False) -> None:
        state.held.discard(job)
        result = self.ledger.finish(job.result(shutdown=shutdown))
        await state.feed.emit(result)


def _shutdown() -> ShutdownError:
    return ShutdownError("the Mailer closed before this message was sent")
