"""The connection pool: FIFO waiters, limits, and release only in a known-clean state.

State changes are synchronous methods that return the I/O still to do (connections to
close); that I/O runs afterwards, shielded from cancellation, so a cancelled caller can
never leave the pool's books wrong.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup

from ._config import PoolLimits, Server, Timeouts
from ._exceptions import (
    ConnectError,
    DeliveryError,
    MailerClosedError,
    Phase,
    PoolTimeout,
    TemporaryFailure,
)
from .smtp._connection import Connection, ConnState

__all__ = ["Pool", "PoolStatistics"]

_CONNECT = None  # what a waiter receives when it is granted a slot to open a connection
CAP_PROBE = 30.0  # seconds before a lowered connection cap is raised by one again
logger = logging.getLogger("asyncmail")


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of the pool."""

    max_connections: int
    idle: int
    busy: int
    connecting: int
    waiting: int
    opened: int
    closed: int

    @property
    def open(self) -> int:
        """Connections open now, idle or busy."""
        return self.idle + self.busy


class Pool:
    """Connections to one server, shared by every sender of a Mailer."""

    def __init__(self, server: Server, limits: PoolLimits, timeouts: Timeouts) -> None:
        self.server = server
        self.limits = limits
        self.timeouts = timeouts
        self._idle: list[Connection] = []  # a stack: the warmest connection is reused first
        self._busy: set[Connection] = set()
        self._connecting = 0
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._opened = 0
        self._closed_count = 0
        self._closed = False
        # the server may allow fewer connections than we would open: then this is lowered
        # to what it accepted, and raised again by one every CAP_PROBE seconds
        self._cap = limits.max_connections
        self._cap_changed = 0.0
        # Where connections say QUIT off the caller's path: the Mailer's task group while
        # it is open. Without one, the caller waits for the QUIT itself.
        self.background: TaskGroup | None = None
        self._quitting = 0  # background disposals not yet done
        self._quit_done: anyio.Event | None = None

    # -- pure state changes ---------------------------------------------------------------

    def _in_use(self) -> int:
        return len(self._idle) + len(self._busy) + self._connecting

    def _checkout(self, conn: Connection) -> Connection:
        conn.state = ConnState.ACTIVE
        conn.reused = conn.transactions > 0
        self._busy.add(conn)
        return conn

    def _take(self, *, fresh: bool) -> tuple[list[Connection], Connection | None, bool]:
        """Pick an idle connection or a slot to open one. Returns (to_close, conn, may_open)."""
        now = time.monotonic()
        if self._cap < self.limits.max_connections and now - self._cap_changed >= CAP_PROBE:
            self._cap += 1  # see whether the server takes one more again
            self._cap_changed = now
            if self._in_use() < self._cap:
                self._hand_over(_CONNECT)  # the first waiter, if any, tries it
        to_close: list[Connection] = []
        while self._idle:
            conn = self._idle.pop()
            if fresh or conn.has_expired(now):
                to_close.append(conn)
                continue
            return to_close, self._checkout(conn), False
        if not self._waiters and self._in_use() < self._cap:
            self._connecting += 1
            return to_close, None, True
        return to_close, None, False

    def _hand_over(self, conn: Connection | None) -> bool:
        """Give a connection (or a slot, when None) to the first live waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            if conn is None:
                self._connecting += 1
            else:
                self._checkout(conn)
            waiter.set_result(conn)
            return True
        return False

    def _release(self, conn: Connection, reusable: bool) -> list[Connection]:
        """Take a connection back. Returns the connections to close."""
        self._busy.discard(conn)
        if reusable and not self._closed and conn.state is ConnState.ACTIVE:
            conn.mark_idle()
            if not conn.has_expired(time.monotonic()):
                if not self._hand_over(conn):
                    self._idle.append(conn)
                return []
        if self._in_use() < self._cap:
            self._hand_over(_CONNECT)
        return [conn]

    def _connect_failed(self) -> None:
        self._connecting -= 1
        if self._in_use() < self._cap:
            self._hand_over(_CONNECT)

    # -- I/O ------------------------------------------------------------------------------

    async def acquire(self, *, fresh: bool = False) -> Connection:
        """Return an open connection for one transaction; release it afterwards.

        Args:
            fresh: Open a new connection instead of reusing an idle one.

        Raises:
            MailerClosedError: The pool was closed.
            PoolTimeout: No connection became free within ``pool_timeout``.
            DeliveryError: Opening a connection failed.
        """
        deadline = time.monotonic() + self.limits.pool_timeout
        while True:
            if self._closed:
                raise MailerClosedError("the Mailer is closed")
            to_close, conn, may_open = self._take(fresh=fresh)
            if to_close:
                await self._retire(to_close)
            if conn is not None:
                return conn
            if not may_open:
                granted = await self._wait(deadline)
                if granted is not None:
                    return granted
            conn = Connection(self.server, self.timeouts, self.limits)
            try:
                await conn.open()
            except DeliveryError as exc:
                self._connect_failed()
                if self._capacity_refusal(exc):
                    continue  # wait for one of the connections the server did accept
                raise
            except BaseException:
                self._connect_failed()
                raise
            self._connecting -= 1
            self._opened += 1
            if self._closed:
                await self._dispose([conn])
                raise MailerClosedError("the Mailer was closed while connecting")
            return self._checkout(conn)

    def _capacity_refusal(self, error: DeliveryError) -> bool:
        """A refusal that means "not one more connection" rather than "server down".

        Relays cap connections per client (Postfix: 421 "too many connections"). With
        other connections open, lower the pool's cap to what the server accepted; the
        send then waits for a connection instead of burning one of its attempts.
        """
        open_now = len(self._idle) + len(self._busy)
        refused = isinstance(error, ConnectError) or (
            isinstance(error, TemporaryFailure) and error.phase is Phase.GREETING
        )
        if not refused or open_now == 0:
            return False
        if open_now < self._cap:
            logger.warning(
                "%s refused connection %d (%s); using %d connection(s)",
                self.server.display,
                open_now + self._connecting + 1,
                error,
                open_now,
            )
        self._cap = max(1, min(self._cap, open_now))
        self._cap_changed = time.monotonic()
        return True

    async def _wait(self, deadline: float) -> Connection | None:
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # handed something just as we gave up: give it back
                granted = waiter.result()
                if granted is None:
                    self._connect_failed()
                else:
                    await self.release(granted, reusable=True)
            else:
                waiter.cancel()
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise PoolTimeout(
                    f"no connection free within {self.limits.pool_timeout} s "
                    f"({self.limits.max_connections} in use)",
                    phase=Phase.POOL,
                ) from None
            if isinstance(exc, asyncio.CancelledError) and self._closed:
                raise MailerClosedError("the Mailer was closed") from None
            raise

    async def release(self, conn: Connection, *, reusable: bool) -> None:
        """Return a connection; anything not known to be clean is closed. Never fails."""
        to_close = self._release(conn, reusable)
        if to_close:
            await self._retire(to_close)

    async def _retire(self, conns: list[Connection]) -> None:
        """Close connections that left the books: clean ones get QUIT, in the background.

        A send that returned an expiring connection (or found an idle one expired) does
        not wait a round trip for the server's goodbye; ``aclose`` waits for all of them.
        """
        background = self.background
        if background is None or not any(c.state is ConnState.IDLE for c in conns):
            await self._dispose(conns)
            return
        self._quitting += 1
        background.start_soon(self._dispose_in_background, conns)

    async def _dispose_in_background(self, conns: list[Connection]) -> None:
        try:
            await self._dispose(conns)
        finally:
            self._quitting -= 1
            if not self._quitting and self._quit_done is not None:
                self._quit_done.set()

    async def _dispose(self, conns: list[Connection]) -> None:
        self._closed_count += len(conns)
        with anyio.CancelScope(shield=True):
            for conn in conns:
                if conn.state is ConnState.IDLE:
                    await conn.quit()
                else:
                    conn.close()

    async def aclose(self) -> None:
        """Refuse new work, QUIT idle connections; busy ones close when released."""
        if self._closed:
            return
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.cancel()
        idle, self._idle = self._idle, []
        self._closed_count += len(idle)
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for conn in idle:
                    tg.start_soon(conn.quit)
            if self._quitting:  # QUITs started in the background: they end within a timeout
                self._quit_done = anyio.Event()
                await self._quit_done.wait()

    def abort_busy(self) -> None:
        """Drop connections still busy (used when a graceful close ran out of time)."""
        for conn in list(self._busy):
            conn.abort()

    @property
    def is_closed(self) -> bool:
        """True after aclose()."""
        return self._closed

    def statistics(self) -> PoolStatistics:
        """A frozen snapshot of the pool's counts."""
        return PoolStatistics(
            max_connections=self.limits.max_connections,
            idle=len(self._idle),
            busy=len(self._busy),
            connecting=self._connecting,
            waiting=sum(1 for w in self._waiters if not w.done()),
            opened=self._opened,
            closed=self._closed_count,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<Pool {self.server.display} idle={s.idle} busy={s.busy} "
            f"connecting={s.connecting} waiting={s.waiting} max={s.max_connections}>"
        )
