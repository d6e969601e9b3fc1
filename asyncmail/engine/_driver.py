"""The one session driver: ``send()`` and every ``send_many()`` worker deliver through it.

``Driver.serve(feed)`` takes jobs from a feed and carries each to its single result. For
each job it picks a relay (``asyncmail.engine._relays``) and acquires one of its
connections, failing over at once to the next relay when one cannot take a connection
(for a job no relay has accepted a recipient of yet), waits for the rate limiters, calls
the write-ahead hook, runs the transaction, RSETs a connection a failed transaction left
open, retries once on a fresh connection when a reused one turns out stale, chains the
next ready job behind the final dot (PIPELINING), and releases the connection, shielded,
in a known state. A job that needs another attempt waits out its backoff in the same
``serve`` (so the messages in backoff are bounded by the workers), and closing the Mailer
cuts that wait short. ``send()`` is a feed of one job. On a connection whose server offers
CHUNKING and PIPELINING, a window of BDAT transactions (``asyncmail.engine._window``) takes
the place of the DATA chain.

Failover: a relay that fails in the handshake (connect, TLS, EHLO, AUTH, a refused greeting,
a timeout before MAIL) is marked down and the next one is tried at once, without backoff;
the whole sweep counts as one attempt of the retry policy, whose error is the last relay's.
A job is never moved once a relay accepted one of its recipients: its other recipients
are retried on that relay only. A reply to MAIL/RCPT/DATA is the relay's answer, never a
reason to fail over. A 4xx that says "too fast" (``asyncmail.smtp._throttle``) slows the
relay down.

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
    Status,
)
from ..message._dsn import DSN
from ..message._envelope import smtp_address
from ..message._verp import expand
from ..smtp._connection import Connection
from ..smtp._judge import Attempt, failed
from ..smtp._throttle import says_too_fast
from ..smtp._transaction import Prepared, prepare, reset, run
from ._job import BeforeSend, Job, Sign
from ._ledger import Ledger, Signal
from ._outcome_log import log_outcome
from ._ratelimit import Limiter
from ._relays import Relays, RelayState, fails_over
from ._retry import backoff_delay, may_retry
from ._window import run_window

__all__ = ["Driver", "Feed"]

logger = logging.getLogger("asyncmail")


class Feed(Protocol):
    """Where a ``serve`` gets its jobs and puts its results."""

    before_send: BeforeSend | None
    retry: RetryPolicy | None
    """This feed's retry policy instead of the Mailer's (the outbox keeps its own schedule)."""
    limiter: Limiter | None
    """This feed's rate limiter instead of the Mailer's (the outbox's is shared by workers);
    a relay's own ``rate_limit`` and its throttled rate apply on top of it."""

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
    """Delivers jobs over the relays' connections; one per Mailer, shared by all its sends."""

    def __init__(
        self,
        relays: Relays,
        *,
        retry: RetryPolicy,
        pipelining: bool,
        ledger: Ledger,
        closing: Signal,
        clock: Callable[[], float] = time.monotonic,
        dsn: DSN | None = None,
        sign: Sign | None = None,
        chunking: bool = True,
        window: int = 8,
    ) -> None:
        self.relays = relays
        self.chunking = chunking
        self.window = window  # BDAT transactions in flight per connection
        self.dsn = dsn
        self.sign = sign  # the Mailer's DKIM signers, for the jobs its feeds make
        self.retry = retry
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
        relay = job.relay if job.pinned and job.relay is not None else self.relays.pick()
        assert relay is not None
        fresh = False
        redo: Job | None = job
        while redo is not None:
            job, redo = redo, None
            got = await self._acquire(state, job, relay, fresh=fresh)
            if got is None:
                return
            relay, conn = got
            clean = False
            try:
                if self._bdat(relay, conn):
                    redo, clean = await run_window(self, state, relay, conn, job)
                else:
                    redo, clean = await self._chain(state, relay, conn, job)
            finally:  # (release shields what it must await: a cancel cannot skip it)
                await relay.pool.release(conn, reusable=clean)
            fresh = True  # a stale connection is replaced once, by a new one (same relay)

    async def _acquire(
        self, state: _Run, job: Job, relay: RelayState, *, fresh: bool
    ) -> tuple[RelayState, Connection] | None:
        """A connection for ``job``, from ``relay`` or, failing over, from the next relays.

        Returns None when no relay gave one: the job's attempt is then settled.
        """
        tried: list[RelayState] | None = None
        while True:
            job.relay = relay
            try:
                conn = await relay.pool.acquire(fresh=fresh)
            except (DeliveryError, MailerClosedError) as exc:
                if not isinstance(exc, DeliveryError):
                    error: DeliveryError = _shutdown()
                else:
                    error = exc
                    tried = tried or []
                    nxt = self._fail_over(job, relay, error, tried)
                    if nxt is not None:
                        relay = nxt
                        continue
                job.begin(self.clock())
                await self.settle(state, job, relay, failed(job.pending, error, reusable=False))
                return None
            if relay.down:
                self.relays.mark_up(relay)
            return relay, conn

    def _fail_over(
        self, job: Job, relay: RelayState, error: DeliveryError, tried: list[RelayState]
    ) -> RelayState | None:
        """After ``relay`` failed to give a connection: the relay to try next, if any."""
        if not fails_over(error):
            return None
        relays = self.relays
        relays.mark_down(relay, error)
        if error.code is not None and says_too_fast(error.code, error.text):
            relay.throttle(error, self.clock())
        if job.pinned or self.closing.fired:
            return None  # a relay accepted some of it: it stays there
        tried.append(relay)
        nxt = relays.pick(exclude=tried)
        if nxt is not None:
            logger.debug("failing over from %s to %s: %s", relay.display, nxt.display, error)
        return nxt

    async def _chain(
        self, state: _Run, relay: RelayState, conn: Connection, job: Job
    ) -> tuple[Job | None, bool]:
        """Run ``job`` and the ready jobs after it on ``conn`` (DATA, not a BDAT window).

        Returns:
            A job to run again on a fresh connection (``conn`` was stale), and whether
            ``conn`` is in a known-clean state.
        """
        first = True
        group_sent = False
        tx: Prepared | Attempt | None = self.transaction_for(conn, job)
        # (filled by the follower while a transaction runs, emptied before the next one)
        chained: list[tuple[Job, Prepared | Attempt | None]] = []
        follow = self._follower(state, relay, conn, chained)  # (one for the whole chain)
        while True:
            # (one job's transaction, inlined: a coroutine less to make, and to resume on
            # each wake-up, per message)
            attempt: Attempt | None = None
            if not isinstance(tx, Prepared):
                attempt = await self._without_io(state, job, tx)
            elif group_sent or await self.start(state, relay, job):  # (else: hook failed)
                # the next transaction of a VERP job goes next: nothing chained behind it
                pipelined = tx.pipelined and not job.more
                attempt = await run(
                    conn,
                    tx,
                    group_sent=group_sent,
                    follow=follow if pipelined else None,
                    gate=job.gate,
                )
                if attempt.needs_rset and attempt.reusable:
                    attempt = replace(attempt, reusable=await reset(conn))
            if attempt is not None:
                if not attempt.reusable:  # the connection ended with it
                    return await self._ended(state, relay, conn, job, attempt, chained, first)
                more, result = self.settled(state, job, relay, attempt)
                if result is not None:
                    await state.feed.emit(result)
                if more:  # the rest of its VERP round: next on this connection if it can
                    if not chained and _may_go_on(conn):
                        tx, group_sent, first = self.transaction_for(conn, job), False, False
                        continue
                    self.again(state, job)
            if chained:
                job, tx = chained.pop()
                group_sent = isinstance(tx, Prepared)
            else:
                nxt = self.ready(state, conn)
                if nxt is None:
                    return None, True
                nxt.relay = relay
                job, tx, group_sent = nxt, self.transaction_for(conn, nxt), False
            first = False

    async def _without_io(self, state: _Run, job: Job, tx: Attempt | None) -> Attempt | None:
        """A job's transaction that ends before any I/O; None when it has no attempt."""
        if tx is None:  # its write-ahead hook failed when it was to be chained
            await self._finish(state, job)
            return None
        job.begin(self.clock())  # refused before any I/O
        return tx

    async def _ended(
        self,
        state: _Run,
        relay: RelayState,
        conn: Connection,
        job: Job,
        attempt: Attempt,
        chained: list[tuple[Job, Prepared | Attempt | None]],
        first: bool,
    ) -> tuple[Job | None, bool]:
        """The end of ``_chain`` when ``job``'s attempt left ``conn`` unusable."""
        if attempt.stale and first:
            job.unbook()
            logger.debug("connection %d was stale; retrying on a fresh one", conn.id)
            return job, False
        if await self.settle(state, job, relay, attempt):
            self.again(state, job)  # the rest of its VERP round, elsewhere
        await self._requeue(state, chained)
        return None, False

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
            self.again(state, following)

    def again(self, state: _Run, job: Job) -> None:
        """Run ``job`` next, on another connection, without waiting."""
        job.due = self.clock()
        state.retries.appendleft(job)

    def _bdat(self, relay: RelayState, conn: Connection) -> bool:
        """Whether ``conn`` carries BDAT windows (``asyncmail.engine._window``)."""
        return (
            self.chunking
            and self.pipelining
            and relay.server.chunking
            and conn.supports("chunking")
            and conn.pipelining
        )

    def ready(self, state: _Run, conn: Connection, *, busy: bool = False) -> Job | None:
        """The next job to run on ``conn`` now, if one is waiting and ``conn`` may take it.

        ``busy``: replies to transactions in flight are still to come (a BDAT window).
        """
        wire = conn.wire
        if state.retries or self.closing.fired or not conn.has_room():
            return None
        if wire is None or (wire.has_unread and not busy):  # an extra reply: out of step
            return None
        job = state.feed.ready()
        if job is not None:
            state.held.add(job)
        return job

    def _follower(
        self,
        state: _Run,
        relay: RelayState,
        conn: Connection,
        chained: list[tuple[Job, Prepared | Attempt | None]],
    ) -> Callable[[], bytes | None]:
        """What ``run`` calls once the content has left: the next job's group, if any."""

        def follow() -> bytes | None:
            if state.retries or self.closing.fired or chained:
                return None
            if state.feed.limiter is not None or relay.pace.limiter is not None:
                return None  # (each transaction waits for its slot first)
            if not conn.has_room():
                return None
            job = state.feed.ready()
            if job is None:
                return None
            state.held.add(job)
            job.relay = relay
            tx: Prepared | Attempt | None = self.transaction_for(conn, job)
            if isinstance(tx, Prepared):
                try:
                    job.announce(state.feed.before_send)
                except DeliveryError as exc:
                    job.fail(exc)  # not sent: its result is handed on after this transaction
                    tx = None
            chained.append((job, tx))
            if not isinstance(tx, Prepared):
                return None
            now = self.clock()
            relay.pace.note(now)
            job.begin(now)
            return tx.group

        return follow

    async def start(self, state: _Run, relay: RelayState, job: Job) -> bool:
        """Before a job's transaction: the write-ahead hook and the rate limits."""
        try:
            job.announce(state.feed.before_send)
        except DeliveryError as exc:
            job.fail(exc)
            await self._finish(state, job)
            return False
        pace = relay.pace
        if pace.lowered:
            relay.recover(self.clock())
        feed_limiter = state.feed.limiter
        if feed_limiter is not None:  # (it stands in for the Mailer-wide rate limit)
            await feed_limiter.acquire()
            limiter: Limiter | None = pace.limiter if relay.own_rate or pace.lowered else None
        else:
            limiter = pace.limiter
        if limiter is not None:
            await limiter.acquire()
        now = self.clock()
        pace.note(now)
        job.begin(now)
        return True

    def transaction_for(
        self, conn: Connection, job: Job, *, bdat: bool = False
    ) -> Prepared | Attempt:
        """The job's next transaction on ``conn``, or the Attempt that ends it before I/O."""
        envelope = job.envelope
        smtputf8 = envelope.needs_smtputf8
        if envelope.wants_smtputf8 and not smtputf8:  # a RawMessage with UTF-8 headers
            smtputf8 = conn.supports("smtputf8")
        elif smtputf8 and not conn.supports("smtputf8"):
            error = NotSupportedError(
                "the message has a non-ASCII address but the server does not offer SMTPUTF8",
                phase=Phase.MAIL,
            )
            return failed(job.pending, error)
        # (valid: checked, and rendered for a server with 8BITMIME, when the job was made)
        rcpts = [(r, smtp_address(r, smtputf8=smtputf8)) for r in job.batch()]
        sender = envelope.sender
        if envelope.verp:  # one recipient: the template filled in for it, as it goes out
            sender = expand(sender, rcpts[0][1])
        sender = smtp_address(sender, smtputf8=smtputf8) if sender else ""
        try:
            content = job.content_for(smtputf8=smtputf8, eightbitmime=conn.eightbitmime)
        except NotSupportedError as exc:
            return failed(job.pending, exc)
        pipelining = self.pipelining and conn.pipelining
        dsn = envelope.dsn or self.dsn
        return prepare(conn, sender, rcpts, content, pipelining=pipelining, dsn=dsn, bdat=bdat)

    async def settle(self, state: _Run, job: Job, relay: RelayState, attempt: Attempt) -> bool:
        """Book an attempt: schedule the job's retry, or hand on its result.

        Returns:
            Whether the job goes on now: the next recipient of a VERP round.
        """
        more, result = self.settled(state, job, relay, attempt)
        if result is not None:
            await state.feed.emit(result)
        return more

    def settled(
        self, state: _Run, job: Job, relay: RelayState, attempt: Attempt
    ) -> tuple[bool, SendResult[Any] | None]:
        """``settle`` but for the await: the caller hands the result on (``feed.emit``).

        (A plain method: it runs for every message, and a coroutine costs more to make.)

        Returns:
            Whether the job goes on now, and its final result if it has one.
        """
        if attempt.status is not Status.DELIVERED or attempt.refused:
            self._check_throttle(relay, attempt)
        policy = state.feed.retry or self.retry
        retry = job.settle(attempt, retry_unknown=policy.retry_unknown)
        if job.more_now:
            return True, None
        if retry:
            if self.closing.fired:
                return False, self._result(state, job, shutdown=True)
            now = self.clock()
            tries = job.tries
            delay = backoff_delay(policy, tries)
            if may_retry(policy, tries, now - job.started, delay):
                logger.debug("retry %d in %.2f s: %s", tries, delay, attempt.error)
                job.due = now + delay
                state.retries.append(job)
                return False, None
        return False, self._result(state, job)

    def _check_throttle(self, relay: RelayState, attempt: Attempt) -> None:
        """Slow the relay down if a reply of this attempt said "too fast"."""
        errors = [attempt.error] if attempt.error is not None else []
        for error in [*errors, *attempt.refused.values()]:
            if error.code is not None and says_too_fast(error.code, error.text):
                relay.throttle(error, self.clock())
                return

    async def _finish(self, state: _Run, job: Job, *, shutdown: bool = False) -> None:
        await state.feed.emit(self._result(state, job, shutdown=shutdown))

    def _result(self, state: _Run, job: Job, *, shutdown: bool = False) -> SendResult[Any]:
        """The job's final result, booked: it leaves ``state`` and the ledger."""
        state.held.discard(job)
        result = self.ledger.finish(job.result(shutdown=shutdown))
        if result.status is not Status.DELIVERED or result.refused:  # (else nothing to log)
            log_outcome(result)
        relay = job.relay
        if relay is not None:
            relay.counts[result.status] += 1
        return result


def _may_go_on(conn: Connection) -> bool:
    """Whether another transaction may follow on ``conn`` now, the session in step."""
    wire = conn.wire
    return conn.has_room() and wire is not None and not wire.has_unread


def _shutdown() -> ShutdownError:
    return ShutdownError("the Mailer closed before this message was sent")
