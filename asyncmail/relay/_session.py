"""One client connection of the relay: aiosmtpd's SMTP with the relay's rules and limits.

aiosmtpd does the SMTP. This subclass adds: the connection limit (421 at the greeting), the
command limit (421, then the connection closes), AUTH only over TLS or on loopback, the
relay rules at MAIL and RCPT, the recipient limit, enhanced status codes on aiosmtpd's size
replies, and the hand-over of each message, with its Received field, to the relay, whose
reply (250 once the message is durable) goes back to the client.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, AnyStr, cast

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword
from aiosmtpd.smtp import Session as SMTPSession

from ._config import RelayConfig
from ._policy import (
    CLIENT_NOT_ALLOWED,
    RELAY_DENIED,
    Route,
    auth_refusal,
    bounce_route,
    client_allowed,
    received_field,
    route,
    with_protocol,
)

__all__ = ["Incoming", "RelaySMTP", "SessionLink"]

logger = logging.getLogger("asyncmail.relay")

TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections; try again later"
TOO_MANY_COMMANDS = "421 4.7.0 Too many commands on one connection; closing it"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
LOCAL_ERROR = "451 4.3.0 Local error in processing; try again later"
#: aiosmtpd's own replies, given their enhanced status codes (RFC 3463).
_ENHANCED = {
    b"552 Error: Too much mail data": b"552 5.3.4 Message too big for this relay",
    b"552 Error: message size exceeds fixed maximum message size": (
        b"552 5.3.4 Message size exceeds the relay's limit"
    ),
}


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message a client finished sending, for the relay to queue."""

    data: bytes  # the Received field, then the content as it came
    sender: str  # "" for the null sender
    routes: tuple[Route, ...]
    queue_id: str


@dataclass(frozen=True, slots=True)
class SessionLink:
    """What a connection may do to its relay, handed to it explicitly."""

    config: RelayConfig
    #: A client connected: False when it is one too many.
    opened: Callable[[RelaySMTP], bool]
    #: The connection is gone.
    closed: Callable[[RelaySMTP], None]
    #: Queue a message; the reply to its final dot.
    accept: Callable[[Incoming], Awaitable[str]]


def _counted(name: str) -> Callable[[RelaySMTP, str | None], Coroutine[Any, Any, None]]:
    """An ``smtp_<name>`` override that counts the command against the connection's limit."""
    base = getattr(SMTP, f"smtp_{name}")

    @functools.wraps(base)  # keeps aiosmtpd's HELP syntax attributes
    async def method(self: RelaySMTP, arg: str | None) -> None:
        if await self.over_command_limit():
            return
        await base(self, arg)

    return method


class _Hooks:
    """aiosmtpd's handler object: forwards its hooks to the protocol instance."""

    async def handle_EHLO(
        self,
        server: RelaySMTP,
        session: SMTPSession,
        envelope: Envelope,
        hostname: str,
        lines: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return server.ehlo_lines(lines)

    async def handle_MAIL(
        self,
        server: RelaySMTP,
        session: SMTPSession,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        return server.on_mail(envelope, address, options)

    async def handle_RCPT(
        self,
        server: RelaySMTP,
        session: SMTPSession,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        return server.on_rcpt(envelope, address, options)

    async def handle_DATA(self, server: RelaySMTP, session: SMTPSession, envelope: Envelope) -> str:
        return await server.on_data(envelope)

    async def handle_exception(self, error: Exception) -> str:
        # a fault of ours, not the client's: it may try again (aiosmtpd would say 500)
        logger.error("the relay failed on a command", exc_info=error)
        return LOCAL_ERROR


class RelaySMTP(SMTP):
    """One client connection of a relay."""

    def __init__(self, link: SessionLink) -> None:
        config = link.config
        super().__init__(
            _Hooks(),
            hostname=config.hostname,
            ident="asyncmail relay",
            data_size_limit=config.max_size,
            enable_SMTPUTF8=True,
            tls_context=config.tls,
            auth_require_tls=False,  # enforced here: over TLS, or on loopback
            authenticator=self._check_password,
            auth_exclude_mechanism={"LOGIN", "PLAIN"} if not config.users else set(),
            timeout=config.timeout,
            loop=asyncio.get_running_loop(),
        )
        self.link = link
        self.config = config
        self.commands = 0
        self.busy = False  # a message is being queued
        self._counted_in = False
        self._over_limit = False
        self._routes: list[Route] = []
        self._routes_of: Envelope | None = None
        self._bounces_only = False  # a client outside allow: only to our SRS addresses

    smtp_HELO = _counted("HELO")
    smtp_EHLO = _counted("EHLO")
    smtp_MAIL = _counted("MAIL")
    smtp_RCPT = _counted("RCPT")
    smtp_DATA = _counted("DATA")
    smtp_RSET = _counted("RSET")
    smtp_NOOP = _counted("NOOP")
    smtp_QUIT = _counted("QUIT")
    smtp_VRFY = _counted("VRFY")
    smtp_HELP = _counted("HELP")
    smtp_STARTTLS = _counted("STARTTLS")

    async def smtp_AUTH(self, arg: str | None) -> None:
        if await self.over_command_limit():
            return
        refusal = auth_refusal(self.config, self.client_ip, self.tls)
        if refusal is not None:
            await self.push(refusal)
            return
        await SMTP.smtp_AUTH(self, arg)

    # --- connection ---------------------------------------------------------------------

    @property
    def client_ip(self) -> str:
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) else ""

    @property
    def tls(self) -> bool:
        """Whether this connection is encrypted now (after STARTTLS)."""
        return self._tls_protocol is not None and self._tls_handshake_okay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            self._counted_in = True
            self._over_limit = not self.link.opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            if self._counted_in:
                self._counted_in = False
                self.link.closed(self)

    async def _handle_client(self) -> None:
        if self._over_limit:
            await self.push(TOO_MANY_CONNECTIONS)
            self.hang_up()
            return
        await super()._handle_client()

    def hang_up(self) -> None:
        """Close the connection (what was written is still sent)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def abort(self) -> None:
        """Drop the connection at once."""
        transport = cast(asyncio.Transport | None, self.transport)
        if transport is not None:
            transport.abort()
            raw = cast(asyncio.Transport | None, self._original_transport)
            if raw is not None and not raw.is_closing():
                raw.abort()

    async def over_command_limit(self) -> bool:
        """Count one command; past the limit, say 421 and close (True)."""
        self.commands += 1
        if self.commands <= self.config.max_commands:
            return False
        await self.push(TOO_MANY_COMMANDS)
        self.hang_up()
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()
        return True

    async def push(self, status: AnyStr) -> None:
        raw = status.encode() if isinstance(status, str) else bytes(status)
        await super().push(_ENHANCED.get(raw, raw))

    # --- EHLO and AUTH ------------------------------------------------------------------

    def ehlo_lines(self, lines: list[str]) -> list[str]:
        """aiosmtpd's EHLO lines with PIPELINING, and AUTH only where it may be used."""
        if auth_refusal(self.config, self.client_ip, self.tls) is not None:
            lines = [line for line in lines if not line.startswith("250-AUTH")]
        # (no ENHANCEDSTATUSCODES: RFC 2034 wants them in every reply, and aiosmtpd's own
        # replies, such as 503 for a command out of order, have none)
        return [*lines[:-1], "250-PIPELINING", lines[-1]]

    def _check_password(
        self,
        server: SMTP,
        session: SMTPSession,
        envelope: Envelope,
        mechanism: str,
        auth_data: LoginPassword,
    ) -> AuthResult:
        user = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password
        expected = self.config.users.get(user)
        if expected is not None and hmac.compare_digest(expected.encode(), password):
            return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    @property
    def authenticated(self) -> bool:
        return bool(self.session is not None and self.session.authenticated)

    # --- the transaction ----------------------------------------------------------------

    def on_mail(self, envelope: Envelope, address: str, options: list[str]) -> str:
        self._bounces_only = not self.authenticated and not client_allowed(
            self.config, self.client_ip
        )
        if self._bounces_only and self.config.srs is None:
            return CLIENT_NOT_ALLOWED
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self._routes, self._routes_of = [], envelope
        return "250 2.1.0 OK"

    def on_rcpt(self, envelope: Envelope, address: str, options: list[str]) -> str:
        if self._routes_of is not envelope:
            self._routes, self._routes_of = [], envelope
        if len(self._routes) >= self.config.max_recipients:
            return TOO_MANY_RECIPIENTS
        found: Route | str | None = bounce_route(self.config, address)
        if found is None and self._bounces_only:
            return CLIENT_NOT_ALLOWED
        if found is None:
            found = route(self.config, address, authenticated=self.authenticated)
        if found is None:
            return RELAY_DENIED
        if isinstance(found, str):  # a forged or expired SRS address
            return found
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        self._routes.append(found)
        return "250 2.1.5 OK"

    async def on_data(self, envelope: Envelope) -> str:
        assert envelope.original_content is not None and envelope.mail_from is not None
        queue_id = secrets.token_hex(8)
        protocol = with_protocol(
            esmtp=bool(self.session and self.session.extended_smtp),
            tls=self.tls,
            auth=self.authenticated,
            smtputf8=bool(envelope.smtp_utf8),
        )
        trace = received_field(
            ehlo=self.session.host_name if self.session else None,
            ip=self.client_ip,
            hostname=self.config.hostname,
            protocol=protocol,
            queue_id=queue_id,
            recipients=tuple(envelope.rcpt_tos),
        )
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        incoming = Incoming(
            trace + envelope.original_content, sender, tuple(self._routes), queue_id
        )
        self.busy = True
        try:
            return await self.link.accept(incoming)
        finally:
            self.busy = False
