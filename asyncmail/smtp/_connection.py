"""One SMTP session: opening it, mapping aiosmtplib's errors, and its lifecycle state.

Opening uses aiosmtplib for connect, TLS, EHLO and AUTH, with asyncmail's security
rules applied around it (STARTTLS required unless configured otherwise, no AUTH over
plaintext). This module is the one boundary where aiosmtplib's exceptions are translated
(``map_error``). The established transport is then handed to ``Wire`` and transactions
run in ``asyncmail._transaction``.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import socket
import ssl
import time
from typing import cast

import aiosmtplib
import aiosmtplib.errors as smtp_errors

from .._config import PoolLimits, Server, Timeouts, TLSMode
from .._exceptions import (
    AuthenticationError,
    ConnectError,
    DeliveryError,
    NotSupportedError,
    PermanentError,
    Phase,
    ServerDisconnected,
    SMTPTimeoutError,
    TLSError,
    error_for_reply,
)
from ._wire import Wire

__all__ = ["ConnState", "Connection", "map_error"]

logger = logging.getLogger("asyncmail")
_ids = itertools.count(1)


_fqdn: str | None = None
_AUTH_TLS = ("plain", "login", "cram-md5")
_AUTH_PLAINTEXT = ("cram-md5", "plain", "login")


async def _ehlo_name(sock: socket.socket) -> str:
    """The name for EHLO: the local FQDN, or else the address literal (RFC 5321 4.1.4).

    Strict relays refuse a bare ``localhost``; ``[192.0.2.1]`` is always acceptable.
    The FQDN is looked up once per process, off the event loop.
    """
    global _fqdn
    if _fqdn is None:
        name = await asyncio.to_thread(socket.getfqdn)
        valid = name.isascii() and "." in name.strip(".") and not any(c.isspace() for c in name)
        _fqdn = name if valid and not name.startswith("localhost") else ""
    if _fqdn:
        return _fqdn
    address = sock.getsockname()[0]
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


async def _greet(smtp: aiosmtplib.SMTP) -> None:
    """EHLO, falling back to HELO for the rare server that does not know EHLO."""
    try:
        await smtp.ehlo()
    except smtp_errors.SMTPHeloError as exc:
        if exc.code < 500:
            raise
        await smtp.helo()


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def map_error(exc: BaseException, phase: Phase) -> DeliveryError:
    """Translate an aiosmtplib (or socket) error into asyncmail's tree. The one boundary."""
    if isinstance(exc, DeliveryError):
        return exc
    tls_failure = _ssl_cause(exc)
    if tls_failure is not None:
        return TLSError(f"TLS failed: {tls_failure}", phase=phase)
    if isinstance(exc, smtp_errors.SMTPConnectResponseError):
        return error_for_reply(exc.code, exc.message, phase=Phase.GREETING)
    if isinstance(exc, smtp_errors.SMTPRecipientRefused):
        return error_for_reply(exc.code, exc.message, phase=Phase.RCPT, recipient=exc.recipient)
    if isinstance(exc, smtp_errors.SMTPSenderRefused):
        return error_for_reply(exc.code, exc.message, phase=Phase.MAIL)
    if isinstance(exc, smtp_errors.SMTPAuthenticationError):
        return error_for_reply(exc.code, exc.message, phase=Phase.AUTH)
    if isinstance(exc, smtp_errors.SMTPResponseException):
        return error_for_reply(exc.code, exc.message, phase=phase)
    if isinstance(exc, smtp_errors.SMTPRecipientsRefused):
        errors = [map_error(e, Phase.RCPT) for e in exc.recipients]
        transient = [e for e in errors if e.retryable]
        return (transient or errors or [PermanentError("all recipients refused", phase=phase)])[0]
    if isinstance(exc, smtp_errors.SMTPConnectTimeoutError):
        return SMTPTimeoutError(str(exc), phase=phase)
    if isinstance(exc, smtp_errors.SMTPTimeoutError):
        return SMTPTimeoutError(str(exc), phase=phase)
    if isinstance(exc, smtp_errors.SMTPConnectError):
        return ConnectError(str(exc), phase=Phase.CONNECT)
    if isinstance(exc, smtp_errors.SMTPServerDisconnected):
        return ServerDisconnected(str(exc), phase=phase)
    if isinstance(exc, smtp_errors.SMTPNotSupported):
        return NotSupportedError(str(exc), phase=phase)
    if isinstance(exc, smtp_errors.SMTPException):
        return PermanentError(exc.message, phase=phase)
    if isinstance(exc, TimeoutError):
        return SMTPTimeoutError(f"timed out in {phase.value}", phase=phase)
    if isinstance(exc, OSError):
        return ConnectError(f"{type(exc).__name__}: {exc}", phase=phase)
    raise exc


class ConnState(enum.Enum):
    """Where a connection is in its life."""

    NEW = "new"
    IDLE = "idle"
    ACTIVE = "active"
    CLOSED = "closed"


class Connection:
    """One SMTP session owned by a pool; the pool decides through its predicates."""

    def __init__(self, server: Server, timeouts: Timeouts, limits: PoolLimits) -> None:
        self.id = next(_ids)
        self.server = server
        self.timeouts = timeouts
        self.limits = limits
        self.state = ConnState.NEW
        self.created_at = time.monotonic()
        self.last_used = self.created_at
        self.transactions = 0
        self.reused = False  # set when a transaction starts on an already-used session
        self.extensions: dict[str, str] = {}
        self.tls_version: str | None = None
        self.wire: Wire | None = None
        self._smtp: aiosmtplib.SMTP | None = None

    # -- predicates the pool decides by ---------------------------------------------------

    @property
    def is_idle(self) -> bool:
        """True when ready for a transaction and not in use."""
        return self.state is ConnState.IDLE and not self.is_closed

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

    def supports(self, extension: str) -> bool:
        """True when the server advertised the EHLO keyword."""
        return extension.lower() in self.extensions

    @property
    def max_size(self) -> int | None:
        """The SIZE limit the server announced, if any."""
        value = self.extensions.get("size", "")
        return int(value) if value.isdigit() and int(value) > 0 else None

    # -- opening ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, secure, greet and authenticate.

        Raises:
            DeliveryError: A mapped failure; the connection is closed.
        """
        phase = Phase.CONNECT
        try:
            sock = await self._connect_socket()
            phase = Phase.GREETING
            server = self.server
            implicit = server.tls_mode is TLSMode.IMPLICIT
            smtp = aiosmtplib.SMTP(
                hostname=server.host,
                local_hostname=server.local_hostname or await _ehlo_name(sock),
                use_tls=implicit,
                start_tls=False,
                tls_context=server.make_ssl_context() if implicit else None,
                timeout=self.timeouts.command,
            )
            self._smtp = smtp
            await smtp.connect(sock=sock, timeout=self.timeouts.greeting)
            phase = Phase.EHLO
            await _greet(smtp)
            tls_active = implicit
            if not implicit and server.tls_mode is not TLSMode.NONE:
                if smtp.supports_extension("starttls"):
                    phase = Phase.STARTTLS
                    await smtp.starttls(tls_context=server.make_ssl_context())
                    tls_active = True
                    phase = Phase.EHLO
                    await smtp.ehlo()
                elif server.tls_mode is TLSMode.STARTTLS:
                    raise TLSError(
                        f"{server.display} did not offer STARTTLS, which is required; refusing "
                        "to continue in plaintext (use tls=opportunistic or none to allow it)",
                        phase=Phase.STARTTLS,
                    )
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "connection %d << EHLO %s (tls=%s)",
                    self.id,
                    " ".join(sorted(smtp.esmtp_extensions)),
                    tls_active,
                )
            if server.has_credentials:
                phase = Phase.AUTH
                await self._authenticate(smtp, tls_active)
                logger.debug("connection %d: AUTH as %s succeeded", self.id, server.username)
            self.extensions = dict(smtp.esmtp_extensions)
            if tls_active:
                ssl_object = smtp.get_transport_info("ssl_object")
                self.tls_version = ssl_object.version() if ssl_object is not None else None
            transport = smtp.transport
            if transport is None or transport.is_closing():
                raise ServerDisconnected("connection lost after the handshake", phase=phase)
            # (uvloop's transports are not asyncio.Transport subclasses, hence the cast)
            self.wire = Wire(cast(asyncio.Transport, transport))
        except asyncio.CancelledError:
            self.abort()
            raise
        except Exception as exc:
            error = map_error(exc, phase)
            if isinstance(error, AuthenticationError) and self._smtp is not None:
                await self._quit_after_refusal()
            self.abort()
            raise error from exc
        self.state = ConnState.IDLE
        self.last_used = time.monotonic()
        logger.debug("connection %d open to %s", self.id, self.server.display)

    async def _quit_after_refusal(self) -> None:
        """Say QUIT after a refused AUTH, so the server sees a clean end (bounded)."""
        assert self._smtp is not None
        try:
            async with asyncio.timeout(min(self.timeouts.command, 2.0)):
                await self._smtp.quit()
        except Exception as exc:  # closing anyway
            logger.debug("connection %d: QUIT after AUTH failure: %r", self.id, exc)

    async def _connect_socket(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        server = self.server
        async with asyncio.timeout(self.timeouts.connect):
            infos = await loop.getaddrinfo(
                server.host, server.effective_port, type=socket.SOCK_STREAM
            )
            last: OSError | None = None
            for family, type_, proto, _, address in infos:
                sock = socket.socket(family, type_, proto)
                try:
                    sock.setblocking(False)
                    await loop.sock_connect(sock, address)
                except OSError as exc:
                    sock.close()
                    last = exc
                    continue
                except BaseException:
                    sock.close()
                    raise
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
        raise ConnectError(
            f"cannot connect to {server.host}:{server.effective_port}: {last}",
            phase=Phase.CONNECT,
        )

    async def _authenticate(self, smtp: aiosmtplib.SMTP, tls_active: bool) -> None:
        server = self.server
        assert server.username is not None
        if not tls_active and not server.allow_plaintext_auth:
            raise AuthenticationError(
                "refusing to send credentials over an unencrypted connection "
                "(use TLS, or allow_plaintext_auth=True if you really mean it)",
                phase=Phase.AUTH,
            )
        if server.oauth_token is not None:
            if "xoauth2" not in smtp.server_auth_methods:
                raise AuthenticationError("the server does not offer XOAUTH2", phase=Phase.AUTH)
            token = await server.oauth_token()
            try:
                await smtp.auth_xoauth2(server.username, token)
            except smtp_errors.SMTPAuthenticationError:
                logger.debug("connection %d: XOAUTH2 refused, refreshing the token once", self.id)
                token = await server.oauth_token()
                await smtp.auth_xoauth2(server.username, token)
            return
        mechanism = self._choose_mechanism(smtp.server_auth_methods, tls_active)
        logger.debug("connection %d >> AUTH %s <credentials redacted>", self.id, mechanism.upper())
        # one mechanism, one try: trying each in turn would count three failures against
        # the account (lockouts, fail2ban) for one wrong password
        login = {
            "plain": smtp.auth_plain,
            "login": smtp.auth_login,
            "cram-md5": smtp.auth_crammd5,
        }[mechanism]
        await login(server.username, server.password or "")

    def _choose_mechanism(self, offered: list[str], tls_active: bool) -> str:
        wanted = self.server.auth_mechanism
        if wanted is not None:
            if wanted not in offered:
                raise AuthenticationError(
                    f"AUTH {wanted.upper()} was asked for but the server offers "
                    f"{' '.join(offered).upper() or 'no AUTH mechanism'}",
                    phase=Phase.AUTH,
                )
            return wanted
        # over TLS PLAIN is as safe as any and the most widely supported; without TLS
        # (allowed explicitly) CRAM-MD5 at least keeps the password off the wire
        order = _AUTH_TLS if tls_active else _AUTH_PLAINTEXT
        for mechanism in order:
            if mechanism in offered:
                return mechanism
        raise AuthenticationError(
            "credentials were given but the server offers no supported AUTH mechanism "
            f"({' '.join(offered).upper() or 'none'})",
            phase=Phase.AUTH,
        )

    # -- after a transaction --------------------------------------------------------------

    def mark_idle(self) -> None:
        """Record that a transaction ended cleanly."""
        self.state = ConnState.IDLE
        self.last_used = time.monotonic()

    async def quit(self) -> None:
        """Say QUIT politely (bounded by the command timeout), then close."""
        wire = self.wire
        if wire is not None and not wire.is_closed and self.state is ConnState.IDLE:
            try:
                async with asyncio.timeout(min(self.timeouts.command, 5.0)):
                    wire.write(b"QUIT\r\n")
                    await wire.read_reply()
            except Exception as exc:  # the session ends either way
                logger.debug("connection %d: QUIT failed: %r", self.id, exc)
        self.close()

    def close(self) -> None:
        """Close at once, without QUIT."""
        self.state = ConnState.CLOSED
        if self.wire is not None:
            self.wire.close()
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    def abort(self) -> None:
        """Drop the connection, discarding anything unsent."""
        self.state = ConnState.CLOSED
        if self.wire is not None:
            self.wire.abort()
        if self._smtp is not None:
            transport = self._smtp.transport
            if transport is not None:
                cast(asyncio.Transport, transport).abort()
            self._smtp.close()
            self._smtp = None

    def __repr__(self) -> str:
        return (
            f"<Connection #{self.id} {self.state.value} {self.server.display} "
            f"transactions={self.transactions}>"
        )
