"""One SMTP session owned by the pool: its lifecycle state and the predicates the pool decides by.

Opening is the one handshake (``asyncmail.smtp._handshake``); the established transport is
then handed to ``Wire`` and transactions run in ``asyncmail.smtp._transaction``.
"""

from __future__ import annotations

import enum
import itertools
import logging
import time
from collections.abc import Callable

import aiosmtplib

from .._config import PoolLimits, Server, Timeouts
from ._handshake import Transcript, abort, handshake
from ._wire import Wire, WireClosed

__all__ = ["ConnState", "Connection"]

logger = logging.getLogger("asyncmail")
_ids = itertools.count(1)


class ConnState(enum.Enum):
    """Where a connection is in its life."""

    NEW = "new"
    IDLE = "idle"
    ACTIVE = "active"
    CLOSED = "closed"


class Connection:
    """One SMTP session owned by a pool; the pool decides through its predicates."""

    def __init__(
        self,
        server: Server,
        timeouts: Timeouts,
        limits: PoolLimits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = next(_ids)
        self.server = server
        self.timeouts = timeouts
        self.limits = limits
        self._clock = clock
        self.state = ConnState.NEW
        self.created_at = clock()
        self.last_used = self.created_at
        self.transactions = 0
        self.reused = False  # set when a transaction starts on an already-used session
        self.extensions: dict[str, str] = {}
        # what the server offers, looked up once at open (each transaction asks)
        self.max_size: int | None = None
        """The SIZE limit the server announced, if any."""
        self.pipelining = False
        self.eightbitmime = False
        self.wire: Wire | None = None
        self._client: aiosmtplib.SMTP | None = None

    # -- predicates the pool decides by ---------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """True when the session is gone or was never opened."""
        return self.state is ConnState.CLOSED or (self.wire is not None and self.wire.is_closed)

    def has_expired(self, now: float) -> bool:
        """True when the connection should be retired instead of reused."""
        return (
            self.is_closed
            or self.transactions >= self.limits.max_messages_per_connection
            or now - self.created_at >= self.limits.max_connection_age
            or now - self.last_used >= self.limits.idle_timeout
            or (self.wire is not None and self.wire.has_unread)
        )

    def has_room(self) -> bool:
        """True when another transaction may follow on this connection now."""
        wire = self.wire  # (``is_closed``, inlined: this is asked for every message)
        return (
            self.state is not ConnState.CLOSED
            and (wire is None or not wire.is_closed)
            and self.transactions < self.limits.max_messages_per_connection
            and self._clock() - self.created_at < self.limits.max_connection_age
        )

    def supports(self, extension: str) -> bool:
        """True when the server advertised the EHLO keyword."""
        extensions = self.extensions  # (keyed in lower case, as callers mostly ask)
        return extension in extensions or extension.lower() in extensions

    # -- life -------------------------------------------------------------------------------

    async def open(self, transcript: Transcript | None = None, *, first: bool = False) -> None:
        """Connect, secure, greet and authenticate (see ``handshake``).

        ``first``: the server never greeted this pool yet (see ``handshake``).

        Raises:
            DeliveryError: A mapped failure; the connection is closed.
        """
        session = await handshake(self.server, self.timeouts, transcript=transcript, first=first)
        self._client = session.client
        self.extensions = session.extensions
        value = self.extensions.get("size", "")
        size = int(value) if value.isdigit() else 0
        self.max_size = size if size > 0 else None
        self.pipelining = self.supports("pipelining")
        self.eightbitmime = self.supports("8bitmime")
        self.wire = Wire(session.transport)
        self.state = ConnState.IDLE
        self.last_used = self._clock()
        logger.debug("connection %d open to %s (tls=%s)", self.id, self.server.display, session.tls)

    def mark_idle(self) -> None:
        """Record that a transaction ended cleanly."""
        self.state = ConnState.IDLE
        self.last_used = self._clock()

    async def quit(self) -> None:
        """Say QUIT politely (bounded by the command timeout), then close."""
        wire = self.wire
        if wire is not None and not wire.is_closed and self.state is ConnState.IDLE:
            try:
                wire.write(b"QUIT\r\n")
                await wire.read_reply(min(self.timeouts.command, 5.0))
            except (WireClosed, TimeoutError) as exc:  # the session ends either way
                logger.debug("connection %d: QUIT failed: %r", self.id, exc)
        self.close()

    def close(self) -> None:
        """Close at once, without QUIT."""
        self.state = ConnState.CLOSED
        if self.wire is not None:
            self.wire.close()
        if self._client is not None:
            self._client.close()
            self._client = None

    def abort(self) -> None:
        """Drop the connection, discarding anything unsent. Safe to call again."""
        self.state = ConnState.CLOSED
        if self.wire is not None:
            self.wire.abort()  # (the Wire owns the transport now)
            if self._client is not None:
                self._client.close()
        else:
            abort(self._client)
        self._client = None

    def __repr__(self) -> str:
        return (
            f"<Connection #{self.id} {self.state.value} {self.server.display} "
            f"transactions={self.transactions}>"
        )
