"""The one handshake: connect, greeting, EHLO, STARTTLS or implicit TLS, AUTH.

aiosmtplib does the talking; asyncmail's security rules are applied around it (STARTTLS
required unless configured otherwise, no AUTH over plaintext, one AUTH mechanism tried
once). This module is the one boundary where aiosmtplib's exceptions are translated
(``map_error``). The pool's connections and ``asyncmail check`` both call ``handshake``;
``check`` passes a transcript hook to show what each step found.

Whatever fails, the socket is closed before the error leaves.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import aiosmtplib
import aiosmtplib.errors as smtp_errors

from .._config import Server, Timeouts, TLSMode
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
    TransientError,
    error_for_reply,
)
from ._sniff import sniff_greeting, tls_version_hint
from ._tap import tap_client

__all__ = ["Handshake", "Transcript", "handshake", "map_error"]

logger = logging.getLogger("asyncmail")

#: Called with a step name (greeting, ehlo, tls, certificate, auth) and what it found.
Transcript = Callable[[str, str], None]

_fqdn: str | None = None
_AUTH_TLS = ("plain", "login", "cram-md5")
_AUTH_PLAINTEXT = ("cram-md5", "plain", "login")


@dataclass(frozen=True, slots=True)
class Handshake:
    """An open, greeted, secured and authenticated session, ready for transactions."""

    transport: asyncio.Transport
    extensions: dict[str, str]
    tls: bool
    client: aiosmtplib.SMTP
    """aiosmtplib's client, kept only to be closed with the session."""


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


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


#: aiosmtplib errors without a reply, to the class that says the same (first match wins).
_NO_REPLY: tuple[tuple[type[Exception], type[DeliveryError]], ...] = (
    (smtp_errors.SMTPTimeoutError, SMTPTimeoutError),  # (SMTPConnectTimeoutError too)
    (smtp_errors.SMTPConnectError, ConnectError),
    (smtp_errors.SMTPServerDisconnected, ServerDisconnected),
    (smtp_errors.SMTPNotSupported, NotSupportedError),
)


def _reply_error(exc: smtp_errors.SMTPResponseException, phase: Phase) -> DeliveryError:
    """An aiosmtplib error that carries the server's reply, classified by its code."""
    recipient = None
    if isinstance(exc, smtp_errors.SMTPConnectResponseError):
        phase = Phase.GREETING
    elif isinstance(exc, smtp_errors.SMTPRecipientRefused):
        phase, recipient = Phase.RCPT, exc.recipient
    elif isinstance(exc, smtp_errors.SMTPSenderRefused):
        phase = Phase.MAIL
    elif isinstance(exc, smtp_errors.SMTPAuthenticationError):
        phase = Phase.AUTH
    return error_for_reply(exc.code, exc.message, phase=phase, recipient=recipient)


def map_error(exc: BaseException, phase: Phase) -> DeliveryError:
    """Translate an aiosmtplib (or socket) error into asyncmail's tree. The one boundary.

    Never raises: an exception nobody foresaw becomes a PermanentError naming its type.
    """
    if isinstance(exc, DeliveryError):
        return exc
    tls_failure = _ssl_cause(exc)
    if tls_failure is not None:
        reason = getattr(tls_failure, "reason", None)  # (unset on one made by hand)
        hint = tls_version_hint(reason) if phase is Phase.GREETING else ""
        return TLSError(f"TLS failed: {hint or tls_failure}", phase=phase)
    if isinstance(exc, smtp_errors.SMTPResponseException):
        return _reply_error(exc, phase)
    if isinstance(exc, smtp_errors.SMTPRecipientsRefused):
        errors = [map_error(e, Phase.RCPT) for e in exc.recipients]
        transient = [e for e in errors if e.retryable]
        return (transient or errors or [PermanentError("all recipients refused", phase=phase)])[0]
    for source, target in _NO_REPLY:
        if isinstance(exc, source):
            where = Phase.CONNECT if target is ConnectError else phase
            return target(str(exc), phase=where)
    if isinstance(exc, smtp_errors.SMTPException):
        return PermanentError(exc.message, phase=phase)
    if isinstance(exc, TimeoutError):
        return SMTPTimeoutError(f"timed out in {phase.value}", phase=phase)
    if isinstance(exc, OSError):
        return ConnectError(f"{type(exc).__name__}: {exc}", phase=phase)
    logger.warning("unexpected %s in %s, reported as a permanent failure", type(exc), phase)
    return PermanentError(f"unexpected {type(exc).__name__} in {phase.value}", phase=phase)


async def handshake(
    server: Server,
    timeouts: Timeouts,
    *,
    transcript: Transcript | None = None,
    first: bool = False,
) -> Handshake:
    """Connect, secure, greet and authenticate.

    Args:
        server: Where, and how.
        timeouts: ``connect``, ``greeting`` and ``command`` apply.
        transcript: Told what each step found, as it goes.
        first: The server never greeted us yet: a plaintext connection that gets no
            greeting soon is diagnosed (wrong port or TLS mode) instead of waited for
            (``asyncmail.smtp._sniff``).

    Raises:
        DeliveryError: A mapped failure; the socket is closed.
    """
    say: Transcript = transcript or (lambda step, text: None)
    phase = Phase.CONNECT
    sock: socket.socket | None = None
    client: aiosmtplib.SMTP | None = None
    try:
        sock = await _connect_socket(server, timeouts)
        phase = Phase.GREETING
        implicit = server.tls_mode is TLSMode.IMPLICIT
        if first and not implicit:
            await sniff_greeting(sock, server, timeouts)
        client = aiosmtplib.SMTP(
            hostname=server.host,
            local_hostname=server.local_hostname or await _ehlo_name(sock),
            use_tls=implicit,
            start_tls=False,
            tls_context=server.make_ssl_context() if implicit else None,
            timeout=timeouts.command,
        )
        tap_client(client)  # (a transcript for ``send -v``; nothing otherwise)
        greeting = await client.connect(sock=sock, timeout=timeouts.greeting)
        say("greeting", f"{greeting.code} {greeting.message}")
        phase = Phase.EHLO
        await _greet(client)
        tls = implicit
        if not implicit and server.tls_mode is not TLSMode.NONE:
            if client.supports_extension("starttls"):
                say("ehlo", _extension_list(client) + " (before STARTTLS)")
                phase = Phase.STARTTLS
                await client.starttls(tls_context=server.make_ssl_context())
                tls = True
                phase = Phase.EHLO
                await client.ehlo()
            elif server.tls_mode is TLSMode.STARTTLS:
                say("ehlo", _extension_list(client))
                raise TLSError(
                    f"{server.display} did not offer STARTTLS, which is required; refusing "
                    "to continue in plaintext (use tls=opportunistic or none to allow it)",
                    phase=Phase.STARTTLS,
                )
        say("ehlo", _extension_list(client))
        _say_tls(client, say)
        if server.has_credentials:
            phase = Phase.AUTH
            mechanism = await _authenticate(client, server, tls)
            say("auth", f"{mechanism.upper()} ok as {server.username}")
        transport = client.transport
        if transport is None or transport.is_closing():
            raise ServerDisconnected("connection lost after the handshake", phase=phase)
        # (uvloop's transports are not asyncio.Transport subclasses, hence the cast)
        return Handshake(
            cast(asyncio.Transport, transport), dict(client.esmtp_extensions), tls, client
        )
    except BaseException as exc:
        error = None if isinstance(exc, asyncio.CancelledError) else map_error(exc, phase)
        if isinstance(error, AuthenticationError) and client is not None:
            await _quit_after_refusal(client, timeouts)
        abort(client, sock)
        if error is None or error is exc:
            raise
        raise error from exc


def abort(client: aiosmtplib.SMTP | None, sock: socket.socket | None = None) -> None:
    """Drop a session (or a bare socket) at once, discarding anything unsent."""
    if client is not None:
        transport = client.transport
        if transport is not None and not transport.is_closing():
            cast(asyncio.Transport, transport).abort()
        client.close()
    if sock is not None:
        sock.close()  # (a no-op once a transport owns it and closed it)


def _extension_list(client: aiosmtplib.SMTP) -> str:
    response = client.last_ehlo_response
    lines = response.message.splitlines()[1:] if response else []
    return ", ".join(lines) or "(no extensions)"


def _say_tls(client: aiosmtplib.SMTP, say: Transcript) -> None:
    ssl_object = client.get_transport_info("ssl_object")
    if ssl_object is None:
        say("tls", "none (plaintext connection)")
        return
    name, _, bits = ssl_object.cipher()
    say("tls", f"{ssl_object.version()}, cipher {name} ({bits} bits)")
    cert: dict[str, Any] | None = ssl_object.getpeercert()
    if cert:
        parts = [f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn]
        subject = ", ".join(parts) or "(none)"
        say("certificate", f"subject {subject}; expires {cert.get('notAfter', '?')}")
    else:
        say("certificate", "not verified, no details available")


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO, falling back to HELO for the rare server that does not know EHLO."""
    try:
        await client.ehlo()
    except smtp_errors.SMTPHeloError as exc:
        if exc.code < 500:
            raise
        await client.helo()


async def _quit_after_refusal(client: aiosmtplib.SMTP, timeouts: Timeouts) -> None:
    """Say QUIT after a refused AUTH, so the server sees a clean end (bounded).

    Only the command: ``client.quit()`` would also close the transport gracefully, which over
    TLS leaves the socket's own transport open until the peer's close_notify, so the
    ``abort`` that follows could not reach it and closing the socket under it would leave
    the event loop a transport on a dead file descriptor (the next socket to get that number
    then fails to connect with a RuntimeError).
    """
    try:
        async with asyncio.timeout(min(timeouts.command, 2.0)):
            await client.execute_command(b"QUIT")
    except Exception as exc:  # closing anyway
        logger.debug("QUIT after AUTH failure: %r", exc)


async def _connect_socket(server: Server, timeouts: Timeouts) -> socket.socket:
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    async with asyncio.timeout(timeouts.connect):
        infos = await loop.getaddrinfo(server.host, server.effective_port, type=socket.SOCK_STREAM)
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


async def _authenticate(client: aiosmtplib.SMTP, server: Server, tls: bool) -> str:
    """AUTH with one mechanism, tried once; return its name."""
    assert server.username is not None
    if not tls and not server.allow_plaintext_auth:
        raise AuthenticationError(
            "refusing to send credentials over an unencrypted connection "
            "(use TLS, or allow_plaintext_auth=True if you really mean it)",
            phase=Phase.AUTH,
        )
    if server.oauth_token is not None:
        if "xoauth2" not in client.server_auth_methods:
            raise AuthenticationError("the server does not offer XOAUTH2", phase=Phase.AUTH)
        try:
            await client.auth_xoauth2(server.username, await _token(server))
        except smtp_errors.SMTPAuthenticationError:
            logger.debug("XOAUTH2 refused, refreshing the token once")
            await client.auth_xoauth2(server.username, await _token(server))
        return "xoauth2"
    mechanism = _choose_mechanism(server, client.server_auth_methods, tls)
    logger.debug(">> AUTH %s <credentials redacted>", mechanism.upper())
    # one mechanism, one try: trying each in turn would count three failures against
    # the account (lockouts, fail2ban) for one wrong password
    login = {
        "plain": client.auth_plain,
        "login": client.auth_login,
        "cram-md5": client.auth_crammd5,
    }[mechanism]
    await login(server.username, server.password or "")
    return mechanism


async def _token(server: Server) -> str:
    """Ask the user's OAuth token provider; its failure is a transient one (IdP down)."""
    assert server.oauth_token is not None
    try:
        return await server.oauth_token()
    except Exception as exc:
        raise TransientError(
            f"the oauth_token provider raised {type(exc).__name__} (see __cause__)",
            phase=Phase.AUTH,
        ) from exc


def _choose_mechanism(server: Server, offered: list[str], tls: bool) -> str:
    wanted = server.auth_mechanism
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
    order = _AUTH_TLS if tls else _AUTH_PLAINTEXT
    for mechanism in order:
        if mechanism in offered:
            return mechanism
    raise AuthenticationError(
        "credentials were given but the server offers no supported AUTH mechanism "
        f"({' '.join(offered).upper() or 'none'})",
        phase=Phase.AUTH,
    )
