"""A window of BDAT transactions in flight on one connection (RFC 3030 with RFC 2920).

``run_window`` is what the driver runs on a connection whose server offers CHUNKING and
PIPELINING, in place of chaining DATA transactions: it writes up to ``Driver.window``
messages before it reads the oldest one's replies, and tops the window up as each one
settles, so many messages share one round trip. Each message's outcome comes from its own
replies, in order (``asyncmail.smtp._bdat``).

When the connection ends under a window:

- it broke, stalled or went out of step: the messages whose last chunk had left end UNKNOWN
  (their replies never came); the one whose bytes had not all left is tried again;
- a 421: the server closes and reads nothing after it, so the messages written behind the one
  it answered were never seen: they are not counted as attempts and go first on the next
  connection.

That is the trade-off of the window's size: each message in flight when a connection dies
after its content left is one more UNKNOWN outcome; a window of 1 has at most one, as DATA.

A reused connection that sat idle for ``PROBE_AFTER`` seconds or more is probed with RSET
before the first message goes: a server that closed it while idle must not leave a window of
messages UNKNOWN.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import anyio.lowlevel

from .._exceptions import DeliveryError
from ..smtp._bdat import Flight, collect, send
from ..smtp._connection import Connection
from ..smtp._judge import Attempt, failed
from ..smtp._transaction import Prepared, reset
from ._job import Job
from ._relays import RelayState

__all__ = ["PROBE_AFTER", "Host", "run_window"]

logger = logging.getLogger("asyncmail")

#: Seconds idle after which a reused connection is probed with RSET before a window starts.
PROBE_AFTER = 1.0


S = TypeVar("S")
S_contra = TypeVar("S_contra", contravariant=True)


class Host(Protocol[S_contra]):
    """What a window needs of the driver (``asyncmail.engine._driver.Driver``).

    ``state`` is the driver's state of one ``serve``, passed back as it came.
    """

    window: int
    clock: Callable[[], float]

    def ready(self, state: S_contra, conn: Connection, *, busy: bool = False) -> Job | None: ...
    def again(self, state: S_contra, job: Job) -> None: ...
    async def start(self, state: S_contra, relay: RelayState, job: Job) -> bool: ...
    async def settle(
        self, state: S_contra, job: Job, relay: RelayState, attempt: Attempt
    ) -> bool: ...
    def transaction_for(
        self, conn: Connection, job: Job, *, bdat: bool = False
    ) -> Prepared | Attempt: ...


_LEFT_BEHIND = "the connection ended before the replies to this message were read"


async def run_window(
    driver: Host[S], state: S, relay: RelayState, conn: Connection, job: Job
) -> tuple[Job | None, bool]:
    """Run ``job`` and the ready jobs after it on ``conn``, a window of them at a time.

    Returns:
        A job to run again on a fresh connection (``conn`` was stale), and whether
        ``conn`` is in a known-clean state.
    """
    stale_after = conn.transactions and driver.clock() - conn.last_used >= PROBE_AFTER
    if stale_after and not await reset(conn):
        logger.debug("connection %d was stale; retrying on a fresh one", conn.id)
        return job, False
    return await _Window(driver, state, relay, conn).run(job)


class _Window(Generic[S]):
    """The state of one connection's window while it runs."""

    def __init__(self, driver: Host[S], state: S, relay: RelayState, conn: Connection) -> None:
        self.driver = driver
        self.state = state
        self.relay = relay
        self.conn = conn
        self.flights: deque[tuple[Job, Flight]] = deque()
        self.queued: deque[Job] = deque()  # go next on this connection (VERP rounds)
        self.clean = True  # no transaction is open: the next MAIL needs no RSET in front
        self.writable = True
        self.ended = False  # a reply (or its absence) ended the session: read no further
        self.unread = False  # ... and the server read nothing after it (a 421)

    async def run(self, job: Job) -> tuple[Job | None, bool]:
        driver, state, flights = self.driver, self.state, self.flights
        self.queued.append(job)
        first = True
        while True:
            await self._fill()
            if not flights:
                break
            job, flight = flights.popleft()
            if self.ended and flight.x.broke is None:
                if self.unread:
                    job.unbook()  # the server never read it: not an attempt
                    driver.again(state, job)
                    continue
                flight.x.broke = _LEFT_BEHIND  # (replies after an out-of-step one mean nothing)
            attempt = await collect(self.conn, flight)
            if attempt.stale:  # nothing done: the server had closed the reused connection
                job.unbook()
                if first and not flights:
                    logger.debug("connection %d was stale; retrying on a fresh one", self.conn.id)
                    return job, False
                driver.again(state, job)
                self.ended = self.unread = True
                continue
            first = False
            await self._settle(job, attempt)
        for waiting in self.queued:  # (the connection ended with VERP rounds still to go)
            driver.again(state, waiting)
        if self.ended or not self.writable:
            return None, False
        if not self.clean:
            return None, await reset(self.conn)
        return None, True

    async def _fill(self) -> None:
        """Put messages in flight until the window is full or none is ready."""
        driver, flights, queued = self.driver, self.flights, self.queued
        while self.writable and not self.ended and len(flights) < driver.window:
            if flights:
                # Let the loop read what has come first: replies a server sent before it
                # closed (a 421) are lost to the reset that writing into its socket brings.
                await anyio.lowlevel.checkpoint()
            if queued:
                job: Job | None = queued.popleft()
            else:
                job = driver.ready(self.state, self.conn, busy=bool(flights))
            if job is None:
                return
            flight = await self._launch(job, rset=bool(flights) or not self.clean)
            if flight is not None:
                flights.append((job, flight))
                self.writable = flight.x.broke is None

    async def _settle(self, job: Job, attempt: Attempt) -> None:
        """Book a message's attempt, and note what its replies say of the session."""
        more = await self.driver.settle(self.state, job, self.relay, attempt)
        if not attempt.reusable and not self.ended:
            self.ended = True
            self.unread = attempt.closing
        self.clean = not attempt.needs_rset
        if more:
            if self.ended or not self.writable:
                self.driver.again(self.state, job)
            else:
                self.queued.append(job)  # the rest of its VERP round, on this connection

    async def _launch(self, job: Job, *, rset: bool) -> Flight | None:
        """Put ``job``'s next transaction in flight; None when it ended before any I/O."""
        driver, relay = self.driver, self.relay
        job.relay = relay
        tx = driver.transaction_for(self.conn, job, bdat=True)
        if isinstance(tx, Attempt):  # refused before any I/O
            job.begin(driver.clock())
            await self._unsent(job, tx)
            return None
        if not await driver.start(self.state, relay, job):
            return None  # the write-ahead hook failed: the job already has its result
        if job.gate is not None:
            try:
                await job.gate()
            except DeliveryError as exc:  # withheld: nothing of it was written
                await self._unsent(job, failed([r for r, _ in tx.recipients], exc))
                return None
        return await send(self.conn, tx, rset=rset)

    async def _unsent(self, job: Job, attempt: Attempt) -> None:
        """Book an attempt that never reached the wire."""
        if await self.driver.settle(self.state, job, self.relay, attempt):
            self.driver.again(self.state, job)
