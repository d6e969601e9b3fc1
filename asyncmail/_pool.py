"""The connection pool: FIFO waiters, limits, and release only in a known-clean state.

State changes are synchronous methods that return the I/O still to do (connections to
close); that I/O runs afterwards, shielded from cancellation, so a cancelled caller can
never leave the pool's books wrong.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
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
from .smtp._sniff import LateGreeting

__all__ = ["Pool", "PoolStatistics"]

_CONNECT = None  # what a waiter receives when it is granted a slot to open a connection
_CLOSED = "closed"  # what a waiter receives when the pool closes under it
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


class _Waiter:
    """A send waiting for a connection; granted exactly once, by the pool's state changes."""

    __slots__ = ("event", "gone", "grant", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.grant: Connection | str | None = None
        self.granted = False
        self.gone = False  # gave up (timeout, cancel): hand-over skips it

    def give(self, grant: Connection | str | None) -> None:
        self.grant, self.granted = grant, True
        self.event.set()


class Pool:
    """Connections to one server, shared by every sender of a Mailer."""

    def __init__(
        self,
        server: Server,
        limits: PoolLimits,
        timeouts: Timeouts,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        self.limits = limits
        self.timeouts = timeouts
        self.clock = clock
        self._idle: list[Connection] = []  # a stack: the warmest connection is reused first
        self._busy: set[Connection] = set()
        # handshakes under way, each in a scope that abort_busy cancels
        self._opening: dict[Connection, anyio.CancelScope] = {}
        self._connecting = 0
        self._waiters: deque[_Waiter] = deque()
        self._open_conns: set[Connection] = set()  # opened and not yet disposed of
        self._opened = 0
        self._closed_count = 0
        self._closed = False  # no more work is taken (refuse)
        self._shut = False  # aclose ran
        # the server may allow fewer connections than we would open: then this is lowered
        # to what it accepted, and raised again by one every CAP_PROBE seconds
        self._cap = limits.max_connections
        self._cap_changed = 0.0
        # until a connection has greeted, a silent greeting is diagnosed, not waited for
        # (a wrong port or TLS mode: asyncmail.smtp._sniff)
        self._greeted = False
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
        now = self.clock()
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
            if waiter.gone:
                continue
            if conn is None:
                self._connecting += 1
            else:
                self._checkout(conn)
            waiter.give(conn)
            return True
        return False

    def _release(self, conn: Connection, reusable: bool) -> list[Connection]:
        """Take a connection back. Returns the connections to close."""
        self._busy.discard(conn)
        if reusable and not self._closed and conn.state is ConnState.ACTIVE:
            conn.mark_idle()  # (clean: closing it says QUIT)
            if not conn.has_expired(self.clock()) and (
                self._cap >= self.limits.max_connections or self._in_use() < self._cap
            ):  # (over a lowered cap, a connection is closed rather than kept)
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
        deadline = self.clock() + self.limits.pool_timeout
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
            try:
                conn = await self._open()
            except DeliveryError as exc:
                self._connect_failed()
                if self._closed:
                    raise MailerClosedError("the Mailer was closed while connecting") from exc
                if self._capacity_refusal(exc):
                    continue  # wait for one of the connections the server did accept
                raise
            except BaseException:
                self._connect_failed()
                raise
            self._connecting -= 1
            self._opened += 1
            self._open_conns.add(conn)
            if self._closed:
                await self._dispose([conn])
                raise MailerClosedError("the Mailer was closed while connecting")
            return self._checkout(conn)

    async def _open(self) -> Connection:
        """Open a new connection; ``abort_busy`` can stop the handshake."""
        conn = Connection(self.server, self.timeouts, self.limits, self.clock)
        with anyio.CancelScope() as scope:
            self._opening[conn] = scope
            try:
                await conn.open(first=not self._greeted)
            except DeliveryError as exc:
                answered = exc.code is not None or isinstance(exc, LateGreeting)
                if answered or exc.phase not in (Phase.CONNECT, Phase.GREETING):
                    self._greeted = True  # (it answered: a refusal, or a later step failed)
                raise
            finally:
                del self._opening[conn]
            self._greeted = True
        if scope.cancelled_caught:
            raise MailerClosedError("the Mailer was closed while connecting")
        return conn

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
        if not refused:
            return False
        if open_now == 0:
            # The server answered 421 while other connections were still opening: they may
            # be the ones it took (Exim counts a connection until its process ends). Wait
            # for them with the cap at one, so the attempts after this go one at a time.
            if not (isinstance(error, TemporaryFailure) and self._connecting):
                return False
            open_now = 1
        if open_now < self._cap:
            logger.warning(
                "%s refused connection %d (%s); using %d connection(s)",
                self.server.display,
                open_now + self._connecting + 1,
                error,
                open_now,
            )
        self._cap = max(1, min(self._cap, open_now))
        self._cap_changed = self.clock()
        return True

    @property
    def cap(self) -> int:
        """Connections allowed now: ``max_connections``, or less while lowered."""
        return self._cap

    @property
    def open_count(self) -> int:
        """Connections open now, idle or busy."""
        return len(self._idle) + len(self._busy)

    def has_room(self) -> bool:
        """True when an acquire would not wait: a connection is idle or one may open."""
        return bool(self._idle) or (not self._waiters and self._in_use() < self._cap)

    def lower_cap(self, cap: int) -> None:
        """Allow at most ``cap`` connections (at least one) from now on; busy connections
        over it close when released, and the cap is raised again by one every CAP_PROBE
        seconds (the server asked for fewer connections: a throttle reply)."""
        self._cap = max(1, min(self._cap, cap))
        self._cap_changed = self.clock()

    async def _wait(self, deadline: float) -> Connection | None:
        """Wait in line for a connection (or a slot to open one: None)."""
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            with anyio.move_on_after(max(0.0, deadline - self.clock())):
                await waiter.event.wait()
        except BaseException:  # cancelled
            waiter.gone = True
            if waiter.granted:  # handed something just as we gave up: give it back
                with anyio.CancelScope(shield=True):
                    await self._give_back(waiter.grant)
            raise
        waiter.gone = True
        if not waiter.granted:
            raise PoolTimeout(
                f"no connection free within {self.limits.pool_timeout} s "
                f"({self.limits.max_connections} in use)",
                phase=Phase.POOL,
            )
        if waiter.grant == _CLOSED:
            raise MailerClosedError("the Mailer was closed")
        assert not isinstance(waiter.grant, str)
        return waiter.grant

    async def _give_back(self, grant: Connection | str | None) -> None:
        if grant is None:
            self._connect_failed()
        elif isinstance(grant, Connection):
            await self.release(grant, reusable=True)

    async def release(self, conn: Connection, *, reusable: bool) -> None:
        """Return a connection; anything not known to be clean is closed. Never fails.

        The books change at once, before any await; only closing connections (if any)
        waits, shielded from cancellation, so a cancelled caller still releases.
        """
        to_close = self._release(conn, reusable)
        if to_close:
            with anyio.CancelScope(shield=True):
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
        self._open_conns.difference_update(conns)
        with anyio.CancelScope(shield=True):
            for conn in conns:
                if conn.state is ConnState.IDLE:
                    await conn.quit()
                else:
                    conn.close()

    def refuse(self) -> None:
        """Take no more work: waiters and later acquires get MailerClosedError, and a
        connection released from now on is closed instead of handed on."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.gone:
                waiter.give(_CLOSED)

    async def aclose(self) -> None:
        """Refuse new work, QUIT idle connections; busy ones close when released."""
        if self._shut:
            return
        self._shut = True
        self.refuse()
        idle, self._idle = self._idle, []
        self._closed_count += len(idle)
        self._open_conns.difference_update(idle)
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for conn in idle:
                    tg.start_soon(conn.quit)
            if self._quitting:  # QUITs started in the background: they end within a timeout
                self._quit_done = anyio.Event()
                await self._quit_done.wait()

    def abort_all(self) -> None:
        """Drop every connection this pool opened that is still open. The last step of a
        close: a QUIT that never got to run (its task group was cancelled first) must not
        leave a socket behind."""
        for conn in self._open_conns:
            if not conn.is_closed:
                conn.abort()
        self._open_conns.clear()

    def abort_busy(self) -> None:
        """Refuse new work, drop connections busy or opening (a close that ran out of time)."""
        self.refuse()
        for conn in self._busy:
            conn.abort()
        for scope in self._opening.values():
            scope.cancel()

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
            waiting=sum(1 for w in self._waiters if not w.gone),
            opened=self._opened,
            closed=self._closed_count,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<Pool {self.server.display} idle={s.idle} busy={s.busy} "
            f"connecting={s.connecting} waiting={s.waiting} max={s.max_connections}>"
        )
