"""Workers that deliver from an outbox's store through a Mailer's one session driver.

A ``Delivery`` runs three kinds of task: a leaser that keeps a small buffer of leased
messages (small, so a high-priority message never waits behind a local backlog), a
heartbeat that renews every lease held while its send is in progress, and ``concurrency``
workers, each a ``Driver.serve`` over a feed of that buffer. Each lease gets one attempt:
its outcome goes back to the store (``_plan.plan``), and a retry waits in the store.

Right before a message's content leaves, its gate records "the final dot may be out"
(``mark_sending``) under the lease's token; a lease lost by then (another worker took it
over) withholds the content and drops the session, so no recipient gets a second copy.

Stopping (``stop()``, a deploy's SIGTERM): no new leases; the buffered messages go back to
the store at once; the sends in progress finish, up to ``grace`` seconds. After that, or on
``stop(now=True)``, they are cut off: a message whose dot may be out ends UNKNOWN, the
others go back to the store. The store calls that lease or settle a message (lease, mark,
finish, release) are shielded from the cut-off, so none is left leased until its lease
runs out.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._config import RetryPolicy
from .._exceptions import (
    MailError,
    NotSupportedError,
    OutboxError,
    PermanentError,
    Phase,
    SendResult,
    ShutdownError,
    Status,
    TransientError,
)
from ..dkim._signer import Signers, foreign_signatures, sign_stuffed
from ..engine._driver import Driver
from ..engine._job import BeforeSend, Job
from ..engine._ledger import Signal
from ..engine._ratelimit import Limiter
from ..message._content import WireContent, wire_content
from ..smtp._transaction import Gate
from ..suppression._model import Suppressions, hard_bounces
from ._codec import Stored, read
from ._model import CUT_OFF_AFTER_DOT, DIED_AFTER_DOT, Lease, Outcome, State
from ._plan import plan
from ._store import Store

__all__ = ["Delivery", "NoTelemetry", "PatientLimiter", "Telemetry"]

logger = logging.getLogger("asyncmail")

T = TypeVar("T")

#: Seconds a shielded clean-up (release, a last outcome) may take when stopping.
CLEANUP_TIMEOUT = 5.0
#: A lease's outcome that the store refused to take is retried this many times.
FINISH_TRIES = 5
ONE_ATTEMPT = RetryPolicy(attempts=1)
#: Messages held (buffered, in flight or being recorded) per worker at most: enough that
#: the workers never wait for a lease, few enough that an urgent message enqueued behind
#: a backlog waits for at most this many per worker.
HELD_PER_WORKER = 3
#: Seconds a store call that a stop must not interrupt may take at most.
STORE_TIMEOUT = 10.0
#: Seconds one call to the store waits for work when none is due.
LEASE_WAIT = 1.0


class Telemetry(Protocol):
    """Where an outbox reports what happens (metrics and traces); see ``_telemetry``.

    Each hook is called once the step is over, with how long it took; it must not raise
    or block.
    """

    def enqueued(self, key: str, created: bool, seconds: float) -> None:
        """A message was stored under ``key`` (``created`` False: the key was taken)."""

    def leased(self, keys: Sequence[str], seconds: float) -> None:
        """One call to the store leased these messages."""

    def finished(self, key: str, outcome: Outcome, seconds: float) -> None:
        """An attempt's outcome was stored; ``seconds`` since the send started (0 if never)."""


class NoTelemetry:
    """Reports nothing."""

    def enqueued(self, key: str, created: bool, seconds: float) -> None:
        pass

    def leased(self, keys: Sequence[str], seconds: float) -> None:
        pass

    def finished(self, key: str, outcome: Outcome, seconds: float) -> None:
        pass


class PatientLimiter:
    """A store's shared rate limiter that waits out the store's failures.

    While the store does not answer, no slot can be taken, so no transaction may start:
    the send waits (and says so in the log) rather than fail or run over the limit.
    """

    def __init__(self, limiter: Limiter, url: str) -> None:
        self.limiter = limiter
        self.url = url

    async def acquire(self) -> None:
        delay = 0.1
        while True:
            try:
                await self.limiter.acquire()
                return
            except OutboxError as exc:
                logger.warning("the shared rate limit in %s failed: %s", self.url, exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def __repr__(self) -> str:
        return f"<PatientLimiter {self.limiter!r}>"


class _LeaseLost(TransientError):
    """The gate refused: the lease is gone (or the store did not answer); nothing was sent."""


@dataclass(slots=True, eq=False)
class _Held:
    """A leased message this process holds."""

    lease: Lease
    job: Job | None = None
    started: float = 0.0
    marked: bool = False  # mark_sending succeeded: the dot may be out
    lost: bool = False  # the lease is gone (renew failed, or another worker took it)
    withheld: bool = False


def worker_name() -> str:
    """A name for this worker process, for operators: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Delivery:
    """Delivers an outbox's messages until stopped. Made by ``Outbox.deliver``."""

    def __init__(
        self,
        store: Store,
        driver: Driver,
        *,
        concurrency: int,
        limiter: Limiter | None,
        retry: RetryPolicy,
        lease_seconds: float,
        resend_unknown: bool,
        telemetry: Telemetry | None = None,
        worker: str | None = None,
        suppressions: Suppressions | None = None,
        sign: Signers | None = None,
    ) -> None:
        self.store = store
        self.sign = sign  # DKIM: what a stored message lacks is signed here
        self.driver = driver
        self.concurrency = concurrency
        self.limiter = limiter
        self.retry = retry
        self.lease_seconds = lease_seconds
        self.resend_unknown = resend_unknown
        self.telemetry: Telemetry = telemetry or NoTelemetry()
        self.worker = worker or worker_name()
        self.suppressions = suppressions
        self.held: dict[int, _Held] = {}  # by id() of the decoded message
        self.stopping = Signal()
        self.cut_off = False
        self._scope: anyio.CancelScope | None = None
        self._room: anyio.Event | None = None
        self.finishing = 0  # outcomes handed to the recorder, not yet stored
        self._outcomes: list[tuple[_Held, Outcome]] = []
        self._outcome_ready: anyio.Event | None = None
        self._all_recorded: anyio.Event | None = None
        self._receive: MemoryObjectReceiveStream[_Held] | None = None
        self.delivered = self.failed = self.unknown = self.retried = 0

    def __repr__(self) -> str:
        state = "stopping" if self.stopping.fired else "running"
        return (
            f"<Delivery {self.store.url} {state} worker={self.worker} held={len(self.held)} "
            f"delivered={self.delivered} failed={self.failed} unknown={self.unknown}>"
        )

    # -- running ------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until ``stop()`` and the sends in progress are done."""
        send, receive = anyio.create_memory_object_stream[_Held](HELD_PER_WORKER * self.concurrency)
        self._receive = receive
        try:
            with anyio.CancelScope() as self._scope:
                if self.cut_off:
                    self._scope.cancel()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._heartbeat)
                    tg.start_soon(self._record)
                    async with anyio.create_task_group() as workers:
                        for _ in range(self.concurrency):
                            workers.start_soon(self.driver.serve, _Feed(self, receive))
                        await self._lease_until_stopped(send)
                    await self._recorded()  # (the outcomes still to store, then the end)
                    tg.cancel_scope.cancel()
        finally:
            self._scope = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT):
                await self._give_back()
            send.close()
            receive.close()

    def stop(self, *, now: bool = False) -> None:
        """Take no new leases; hand back the buffered ones; let the sends in progress end.

        Args:
            now: Cut the sends in progress off too: ``run()`` returns at once, after
                handing back (or ending UNKNOWN, if the dot may be out) what it holds.
        """
        self.stopping.set()
        self._wake()
        if now:
            self.cut_off = True
            if self._scope is not None:
                self._scope.cancel()

    def _wake(self) -> None:
        if self._room is not None:
            self._room.set()

    async def _lease_until_stopped(self, send: MemoryObjectSendStream[_Held]) -> None:
        async with send:  # (it holds no more than the messages held: sending never blocks)
            while not self.stopping.fired:
                room = HELD_PER_WORKER * self.concurrency - len(self.held) - self.finishing
                if room < self.concurrency:  # (lease in batches, not one by one)
                    self._room = anyio.Event()
                    await self._room.wait()
                    continue
                try:
                    leases = await self._lease(room)
                except OutboxError as exc:
                    logger.warning("leasing from %s failed: %s", self.store.url, exc)
                    with anyio.move_on_after(1.0):
                        await self.stopping.wait()
                    continue
                for lease in leases:
                    held = await self._hold(lease)
                    if held is not None:
                        await send.send(held)
        # the workers end once the buffer is empty: what is left there goes back
        await self._release_buffered()

    async def _lease(self, count: int) -> list[Lease]:
        started = time.monotonic()
        # (shielded: leases taken and dropped by a cut-off would stay leased until they run
        # out. The leaser stops leasing at the first stop(), so this delays a cut-off only
        # when both come within one lease call.)
        leases = await _shielded(
            self.store.lease(
                self.worker,
                count,
                self.lease_seconds,
                wait=LEASE_WAIT,
                resend_unknown=self.resend_unknown,
            )
        )
        if leases:
            keys = [lease.key for lease in leases]
            self.telemetry.leased(keys, time.monotonic() - started)
        return leases

    async def _hold(self, lease: Lease) -> _Held | None:
        """Turn a lease into a job; a message that cannot be read back ends FAILED."""
        held = _Held(lease)
        try:
            job = StoredJob(read(lease.payload), self.sign)
        except MailError as exc:
            outcome = plan(
                lease,
                SendResult(
                    message=None,
                    status=Status.FAILED,
                    refused=dict.fromkeys(lease.pending, PermanentError(str(exc))),
                    error=exc,
                ),
                policy=self.retry,
                now=time.time(),
                resend_unknown=False,
            )
            await self._finish_all([(held, outcome)])
            return None
        job.pending = list(lease.pending)
        job.gate = self._gate(held)
        held.job = job
        self.held[id(job.message)] = held
        return held

    def _gate(self, held: _Held) -> Gate:
        async def gate() -> None:
            if held.lost:
                held.withheld = True
                raise _LeaseLost("the outbox lease was lost; not sent")
            try:
                # (shielded: a cut-off must know whether it was marked)
                ok = await _shielded(self.store.mark_sending(held.lease.key, held.lease.token))
            except OutboxError as exc:
                held.withheld = True
                raise _LeaseLost(f"the outbox did not record the send: {exc}") from exc
            if not ok:
                held.lost = held.withheld = True
                raise _LeaseLost("the outbox lease was taken over; not sent")
            held.marked = True

        return gate

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.lease_seconds / 3)
            leases = [(h.lease.key, h.lease.token) for h in self.held.values() if not h.lost]
            try:
                lost = await self.store.renew(leases, self.lease_seconds)
            except OutboxError as exc:
                logger.warning("renewing leases in %s failed: %s", self.store.url, exc)
                continue
            for held in self.held.values():
                if held.lease.key in lost:
                    held.lost = True

    # -- outcomes -----------------------------------------------------------------------

    async def emit(self, result: SendResult[Any]) -> None:
        """A worker's result: store what it means for the message."""
        held = self.held.pop(id(result.message), None)
        self._wake()
        if held is None:
            return
        if held.withheld or held.lost:
            if not held.marked:
                await self._release(held)
            return  # (another worker has it, or its lease runs out and it is taken over)
        if isinstance(result.error, ShutdownError) and not held.marked:
            await self._release(held)  # the Mailer closed first: not an attempt
            return
        outcome = plan(
            held.lease,
            result,
            policy=self.retry,
            now=time.time(),
            resend_unknown=self.resend_unknown,
        )
        # stored in the background: the worker goes on with its next message meanwhile
        # (until it is stored, the message stays SENDING or LEASED under a live lease)
        self.finishing += 1
        self._outcomes.append((held, outcome))
        if self._outcome_ready is not None:
            self._outcome_ready.set()
        if self.suppressions is not None and result.refused:
            await self._suppress(result)  # (after: a cut-off here loses no outcome)

    async def _suppress(self, result: SendResult[Any]) -> None:
        """Add the recipients a server refused as non-existent to the suppression list."""
        assert self.suppressions is not None
        bounced = hard_bounces(result, source=f"worker {self.worker}")
        if not bounced:
            return
        try:
            await self.suppressions.add(bounced)
        except (MailError, OSError) as exc:  # (the outcome is stored regardless)
            logger.warning(
                "adding %d hard bounces to the suppression list failed: %s", len(bounced), exc
            )

    async def _record(self) -> None:
        """Store the workers' outcomes, all those waiting in one call (commit, round trip)."""
        while True:
            if not self._outcomes:
                if self._all_recorded is not None:
                    self._all_recorded.set()
                self._outcome_ready = anyio.Event()
                await self._outcome_ready.wait()
                continue
            batch, self._outcomes = self._outcomes, []
            try:
                await self._finish_all(batch)
            finally:
                self.finishing -= len(batch)
                self._wake()

    async def _recorded(self) -> None:
        """Wait until every outcome handed to the recorder is stored (or given up)."""
        while self.finishing:
            self._all_recorded = anyio.Event()
            if self._outcome_ready is not None:
                self._outcome_ready.set()
            await self._all_recorded.wait()

    async def _finish_all(self, batch: list[tuple[_Held, Outcome]]) -> None:
        items = [(held.lease.key, held.lease.token, outcome) for held, outcome in batch]
        for n in range(FINISH_TRIES):
            try:
                # (shielded: a cut-off must not lose an outcome)
                done = await _shielded(self.store.finish_many(items))
                break
            except OutboxError as exc:
                keys = ", ".join(repr(key) for key, _, _ in items[:3])
                logger.warning("recording the outcome of %s failed: %s", keys, exc)
                await anyio.sleep(0.2 * 2**n)
        else:
            return  # their leases run out; the next worker settles them
        for (held, outcome), stored in zip(batch, done, strict=True):
            if not stored:
                logger.info("outbox lease of %r was lost before its outcome", held.lease.key)
                continue
            self._count(outcome)
            seconds = time.monotonic() - held.started if held.started else 0.0
            self.telemetry.finished(held.lease.key, outcome, seconds)

    def _count(self, outcome: Outcome) -> None:
        if outcome.state is State.DELIVERED:
            self.delivered += 1
        elif outcome.state is State.FAILED:
            self.failed += 1
        elif outcome.state is State.UNKNOWN:
            self.unknown += 1
        else:
            self.retried += 1

    async def _release(self, held: _Held) -> None:
        try:
            # (shielded: or it stays leased until its lease ends)
            await _shielded(self.store.release(held.lease.key, held.lease.token))
        except OutboxError as exc:
            logger.warning("releasing %r failed (its lease runs out): %s", held.lease.key, exc)

    async def give_back(self, held: _Held) -> None:
        """A leased message not started: back to the store, for any worker."""
        if held.job is not None:
            self.held.pop(id(held.job.message), None)
        await self._release(held)

    async def _release_buffered(self) -> None:
        receive = self._receive
        if receive is None:
            return
        while True:
            try:
                held = receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return
            await self.give_back(held)

    async def _give_back(self) -> None:
        """After a cut-off: every message still held goes back, or ends UNKNOWN (with
        ``resend_unknown``, one whose final dot may be out goes back too: at least once)."""
        await self._release_buffered()
        pending, self._outcomes = self._outcomes, []
        if pending:  # (outcomes the recorder had not stored yet)
            await self._finish_all(pending)
        for key in list(self.held):
            held = self.held.pop(key)
            if held.marked and not held.lost:
                outcome = _died_after_dot(held.lease, time.time(), resend=self.resend_unknown)
                await self._finish_all([(held, outcome)])
            elif not held.lost:
                await self._release(held)


class StoredJob(Job):
    """A job for a stored message: its content goes out as stored, rendered at enqueue.

    The message is only read back for a server that needs another rendering (one without
    8BITMIME); its results carry the ``Stored`` payload as their message.

    DKIM: the stored content carries the signatures made at enqueue. ``sign`` (the outbox's
    signers and the worker Mailer's) adds those it lacks, so a worker may own the key. A
    new rendering is signed by ``sign`` alone: a signature made at enqueue by a key this
    worker does not have makes that a ``NotSupportedError``, never an unsigned message.
    """

    __slots__ = ("signers", "stored")

    def __init__(self, stored: Stored, sign: Signers | None = None) -> None:
        super().__init__(stored, stored.envelope, sign)
        self.stored = stored
        self.signers = sign
        content = stored.content
        if sign is not None:
            header = sign_stuffed(content.data, sign)
            if header:  # (ASCII lines, none starting with a dot: no stuffing to redo)
                size = content.size + len(header)
                content = WireContent(
                    header + content.data, size, content.eight_bit, content.smtputf8
                )
        self.content[(stored.envelope.needs_smtputf8, True)] = content

    def content_for(self, *, smtputf8: bool, eightbitmime: bool) -> WireContent:
        made = self.content.get((smtputf8, eightbitmime))
        if made is None:
            foreign = foreign_signatures(self.stored.content.data, self.signers)
            if foreign:
                signers = ", ".join(f"d={d} s={s}" for d, s in sorted(foreign))
                raise NotSupportedError(
                    f"the server does not offer 8BITMIME, and the message must be rendered "
                    f"again for it, but it was DKIM-signed at enqueue ({signers}) with a key "
                    f"this worker does not have: give the worker's Outbox or Mailer the same "
                    f"dkim=, or send through a server that offers 8BITMIME",
                    phase=Phase.MAIL,
                )
            made = self.content[(smtputf8, eightbitmime)] = wire_content(
                self.stored.message(),
                message_id=self.envelope.message_id,
                smtputf8=smtputf8,
                eightbitmime=eightbitmime,
                sign=self.sign,
            )
        return made


class _Feed:
    """One worker's feed: jobs from the shared buffer, results to the store."""

    def __init__(self, delivery: Delivery, receive: MemoryObjectReceiveStream[_Held]) -> None:
        self.delivery = delivery
        self.receive = receive
        self.before_send: BeforeSend | None = None
        self.retry: RetryPolicy | None = ONE_ATTEMPT
        self.limiter: Limiter | None = delivery.limiter

    def _start(self, held: _Held) -> Job:
        assert held.job is not None
        held.started = time.monotonic()
        self.delivery.driver.ledger.admit()
        return held.job

    async def next(self) -> Job | None:
        if self.delivery.stopping.fired:
            return None
        try:
            held = await self.receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return None
        if self.delivery.stopping.fired:
            await self.delivery.give_back(held)
            return None
        return self._start(held)

    def ready(self) -> Job | None:
        if self.delivery.stopping.fired:
            return None
        try:
            held = self.receive.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            return None
        return self._start(held)

    async def emit(self, result: SendResult[Any]) -> None:
        await self.delivery.emit(result)


async def _shielded(call: Awaitable[T]) -> T:
    """Await a store call that a cut-off must not interrupt, for STORE_TIMEOUT at most.

    Raises:
        OutboxError: The store did not answer in time (a hung server must not hang a stop).
    """
    with anyio.CancelScope(shield=True) as scope:
        scope.deadline = anyio.current_time() + STORE_TIMEOUT
        return await call
    raise OutboxError(f"the outbox store did not answer within {STORE_TIMEOUT:g} s")


def _died_after_dot(lease: Lease, now: float, *, resend: bool) -> Outcome:
    if resend and lease.pending:  # at least once: the recipients in flight are tried again
        return Outcome(
            state=State.QUEUED,
            pending=lease.pending,
            accepted=lease.accepted,
            refused=lease.refused,
            unknown=lease.unknown,
            attempts=lease.attempts + 1,
            first_attempt_at=lease.first_attempt_at or now,
            due=now,
            error=CUT_OFF_AFTER_DOT,
            reply=None,
        )
    state = State.DELIVERED if lease.accepted else State.UNKNOWN
    return Outcome(
        state=state,
        pending=(),
        accepted=lease.accepted,
        refused=lease.refused,
        unknown=(*lease.unknown, *lease.pending),
        attempts=lease.attempts + 1,
        first_attempt_at=lease.first_attempt_at or now,
        due=now,
        error=DIED_AFTER_DOT,
        reply=None,
    )
