"""First contact: tell a wrong port or TLS mode apart from a slow server, quickly.

A plaintext client (``smtp://``) that reaches an implicit-TLS port, or something that is not
an SMTP server at all, would wait the whole greeting timeout, and the retries would wait it
again on new connections. So the first connection to a server that has never greeted looks
at what arrives (without consuming it: aiosmtplib reads the greeting afterwards) and, when no
greeting comes within ``FIRST_GREETING`` seconds, asks the silent server a TLS hello to see
what it is. What it finds becomes an error with a hint (``hint_for`` is the pure part).

Only a server that never greeted is sniffed: once one connection has greeted, a stalled
greeting is a slow server and keeps the ordinary transient timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

from .._config import Server, Timeouts
from .._exceptions import DeliveryError, PermanentError, Phase, SMTPTimeoutError, TLSError

__all__ = ["FIRST_GREETING", "LateGreeting", "hint_for", "sniff_greeting", "tls_version_hint"]

#: Seconds the first connection to a server that never greeted waits for the greeting (or
#: the greeting timeout, when shorter). Above sendmail's usual ``greet_pause`` (5 s).
FIRST_GREETING = 10.0
#: Seconds a silent server has to answer the TLS hello of the probe.
PROBE_WAIT = 2.0
_PEEK = 64
_PLAIN_SMTP_FIRST = "the server speaks plain SMTP first: use smtp:// (STARTTLS), usually port 587"


class LateGreeting(SMTPTimeoutError):
    """The server greeted, but only after the first-greeting limit: it is an SMTP server.

    This connection is spoilt (the TLS hello went to it); the next one waits the whole
    greeting timeout, as for any server that has greeted.
    """


def looks_like_tls(data: bytes) -> bool:
    """A TLS record header: handshake (0x16) or alert (0x15), then major version 3."""
    return len(data) >= 2 and data[0] in (0x15, 0x16) and data[1] == 0x03


def looks_like_smtp(data: bytes) -> bool:
    """The start of an SMTP reply: three digits (or as many of them as have arrived)."""
    head = data[:3]
    return bool(head) and head.isdigit()


def sanitised(data: bytes) -> str:
    """The first line of what a server sent, printable ASCII only, short: for a message."""
    line = data.split(b"\n", 1)[0].decode("ascii", "replace")
    text = "".join(c if c.isprintable() and c.isascii() else "?" for c in line.rstrip("\r"))
    return text[:40] + ("..." if len(text) > 40 else "")


def hint_for(port: int, data: bytes | None) -> DeliveryError | None:
    """The error for what a plaintext first connection got instead of a greeting.

    Args:
        port: The server's port.
        data: The first bytes it sent (or answered to a TLS hello); None when it said
            nothing at all, ``b""`` when it closed.

    Returns:
        A permanent error with a hint when the bytes (or the port) show a wrong port or
        TLS mode; None when they look like SMTP or prove nothing.
    """
    if data and looks_like_smtp(data):
        return None
    if data and looks_like_tls(data):
        return TLSError(
            "the server answered in TLS, not with an SMTP greeting: "
            "this looks like TLS: use smtps:// (implicit TLS)",
            phase=Phase.GREETING,
        )
    if data:
        return PermanentError(
            f"this is not an SMTP server (it answered {sanitised(data)!r})",
            phase=Phase.GREETING,
        )
    if port == 465:
        return TLSError(
            "no SMTP greeting from port 465: port 465 usually needs smtps:// (implicit TLS)",
            phase=Phase.GREETING,
        )
    return None


def tls_version_hint(reason: str | None) -> str:
    """What an implicit-TLS (``smtps://``) handshake failure means, for its message."""
    if reason == "WRONG_VERSION_NUMBER":  # (the server's first bytes were not TLS)
        return f"the server did not answer in TLS; {_PLAIN_SMTP_FIRST}"
    return ""


async def _peek(sock: socket.socket, wait: float) -> bytes | None:
    """The bytes waiting on ``sock`` (left there), ``b""`` at EOF, None if none in time."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    fd = sock.fileno()
    loop.add_reader(fd, wake)
    try:
        async with asyncio.timeout(wait):
            await ready
    except TimeoutError:
        return None
    finally:
        loop.remove_reader(fd)
    try:
        return sock.recv(_PEEK, socket.MSG_PEEK)
    except BlockingIOError:  # (a spurious wake-up)
        return None
    except OSError:
        return b""


def _client_hello() -> bytes:
    """The bytes of a TLS ClientHello (no certificate is checked: nothing is sent after)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing)
    with contextlib.suppress(ssl.SSLWantReadError):  # (it waits for the server's answer)
        tls.do_handshake()
    return outgoing.read()


async def _probe(sock: socket.socket, wait: float) -> bytes | None:
    """Say a TLS hello to a silent server and return the first bytes of its answer."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(wait):
            await loop.sock_sendall(sock, _client_hello())
    except (OSError, TimeoutError):
        return b""
    return await _peek(sock, wait)


async def sniff_greeting(sock: socket.socket, server: Server, timeouts: Timeouts) -> None:
    """Check the first connection to a server that never greeted, before aiosmtplib reads.

    Returns at once when the first bytes look like SMTP (or the server closed: that is
    reported as usual); they are left unread. On an event loop that cannot watch a socket
    (``add_reader``: Windows' proactor loop) it returns at once, diagnosing nothing.

    Raises:
        TLSError: The port or the answer says implicit TLS (use ``smtps://``).
        PermanentError: The server is not an SMTP server (its first bytes are named).
        SMTPTimeoutError: No greeting within the first-greeting limit and nothing to say
            why (transient: a server may be slow to greet).
    """
    limit = min(timeouts.greeting, FIRST_GREETING)
    try:
        data = await _peek(sock, limit)
    except NotImplementedError:  # a loop without add_reader (Windows' proactor): no sniffing
        return
    if data is not None:
        error = hint_for(server.effective_port, data)
        if error is not None:
            raise error
        return
    error = hint_for(server.effective_port, None)
    if error is not None:
        raise error
    answer = await _probe(sock, min(PROBE_WAIT, limit))
    if answer and looks_like_smtp(answer):  # a slow greeting, not a wrong setting
        raise LateGreeting(
            f"the first connection to {server.display} got its greeting only after "
            f"{limit:g} s; the next one waits the whole greeting timeout",
            phase=Phase.GREETING,
        )
    error = hint_for(server.effective_port, answer)
    if error is not None:
        raise error
    why = "" if answer else ", and no answer to a TLS hello either"
    raise SMTPTimeoutError(
        f"no greeting within {limit:g} s on the first connection to {server.display}{why}",
        phase=Phase.GREETING,
    )
