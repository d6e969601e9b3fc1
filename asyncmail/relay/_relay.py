"""The relay: listens for SMTP clients and queues each message in an outbox before its 250.

::

    async with Mailer(url) as mailer, Outbox(db, resend_unknown=True) as outbox:
        async with outbox.deliver(mailer), Relay(RelayConfig(port=2525), outbox):
            await stop.wait()

A message is queued as a ``RawMessage``: its bytes as they came, after one Received field.
The 250 to the final dot is sent only after the outbox's ``enqueue`` returned, which for
SQLite is after the commit reached the disk: a 250 survives ``kill -9`` and power loss. A
message whose recipients include forwarded ones (alias targets elsewhere) is queued twice,
once per envelope sender: the forwarded copy's sender gets SRS when it is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from .._exceptions import MailError, MessageError
from ..message._raw import RawMessage
from ..outbox._outbox import Outbox
from ._config import RelayConfig
from ._session import Incoming, RelaySMTP, SessionLink

__all__ = ["Relay", "RelayStatistics"]

logger = logging.getLogger("asyncmail.relay")

#: Seconds a stopping relay waits for the messages being queued when it stopped.
STOP_WAIT = 10.0
QUEUE_FAILED = "451 4.3.0 The queue is not available; try again later"


@dataclass(frozen=True, slots=True)
class RelayStatistics:
    """A snapshot of a relay's counts since it started."""

    accepted: int  # messages queued (a 250 sent)
    refused: int  # messages not queued (a 4xx or 5xx to the final dot)
    connections: int  # connections accepted (those refused at the greeting too)
    open_connections: int


class Relay:
    """An SMTP server that queues what it accepts into ``outbox``; an async context manager.

    It delivers nothing itself: run ``outbox.deliver(mailer)`` beside it. Leaving the block
    stops listening, closes idle connections, and waits for the messages being queued.

    Args:
        config: Where to listen, whom to accept, and the limits.
        outbox: An open Outbox. Give it ``resend_unknown=True``: a relay promised delivery
            with its 250, and a message whose delivery was cut off after its final dot left
            must be sent again rather than dropped (at-least-once, as every MTA).
    """

    def __init__(self, config: RelayConfig, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox
        self._accepted = self._refused = self._connections = 0
        self._live: set[RelaySMTP] = set()
        self._server: asyncio.Server | None = None
        self._state = "new"
        self._queueing = 0  # messages being queued now
        self._idle = asyncio.Event()
        self._link = SessionLink(
            config=config, opened=self._opened, closed=self._closed, accept=self._accept
        )

    def __repr__(self) -> str:
        return (
            f"<Relay {self._state} {self.config.host}:{self.port} accepted={self._accepted} "
            f"refused={self._refused} live={len(self._live)}>"
        )

    def statistics(self) -> RelayStatistics:
        """A frozen snapshot of the relay's counts."""
        return RelayStatistics(
            accepted=self._accepted,
            refused=self._refused,
            connections=self._connections,
            open_connections=len(self._live),
        )

    @property
    def port(self) -> int:
        """The port listened on (the one the OS picked for port 0); 0 before start."""
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError("a Relay can be started once; create a new one")
        self._state = "running"
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: RelaySMTP(self._link), self.config.host, self.config.port
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening; close idle connections; let messages being queued finish."""
        if self._state == "closed":
            return
        self._state = "closed"
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for session in list(self._live):
            if not session.busy:
                session.abort()
        if self._queueing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), STOP_WAIT)
        for session in list(self._live):
            session.abort()
        await server.wait_closed()

    # --- called by the sessions ---------------------------------------------------------

    def _opened(self, session: RelaySMTP) -> bool:
        self._live.add(session)
        self._connections += 1
        return self._state == "running" and len(self._live) <= self.config.max_connections

    def _closed(self, session: RelaySMTP) -> None:
        self._live.discard(session)

    async def _accept(self, incoming: Incoming) -> str:
        self._queueing += 1
        self._idle.clear()
        try:
            reply = await self._queue(incoming)
        finally:
            self._queueing -= 1
            if not self._queueing:
                self._idle.set()
        if reply.startswith("250"):
            self._accepted += 1
        else:
            self._refused += 1
        return reply

    async def _queue(self, incoming: Incoming) -> str:
        """Queue a message (one entry per envelope sender); the reply to its final dot."""
        local = [t for r in incoming.routes for t in r.local]
        forwarded = [t for r in incoming.routes for t in r.forwarded]
        sender = fwd_sender = incoming.sender
        if forwarded and self.config.srs is not None:
            try:
                fwd_sender = self.config.srs.forward(sender)
            except MailError as exc:
                return f"550 5.7.1 Cannot forward mail from this sender: {_one_line(exc)}"
        try:
            messages = []
            if local:
                messages.append((incoming.queue_id, self._raw(incoming.data, sender, local)))
            if forwarded:
                message = self._raw(incoming.data, fwd_sender, forwarded)
                messages.append((f"{incoming.queue_id}.fwd", message))
        except MessageError as exc:
            return f"554 5.6.0 Message refused: {_one_line(exc)}"
        try:
            for key, message in messages:
                await self.outbox.enqueue(message, key=key)
        except MessageError as exc:
            return f"554 5.6.0 Message refused: {_one_line(exc)}"
        except MailError as exc:  # (OutboxError: the store failed; or the outbox is closed)
            logger.warning("queueing %s failed: %s", incoming.queue_id, exc)
            return QUEUE_FAILED
        return f"250 2.0.0 OK queued as {incoming.queue_id}"

    def _raw(self, data: bytes, sender: str, recipients: list[str]) -> RawMessage:
        return RawMessage(data, sender=sender, recipients=recipients, dkim=self.config.dkim)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:400]
