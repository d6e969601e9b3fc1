"""``asyncmail check URL``: a connection diagnostic that sends nothing.

It speaks to the server with aiosmtplib directly, step by step, so it can show what each step
found (EHLO extensions, TLS version and cipher, the certificate, AUTH) even when a later step
fails. The password is used for AUTH and never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Any, cast

import aiosmtplib

from .._config import Server, TLSMode

__all__ = ["run_check"]


def _subject(cert: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn]
    return ", ".join(parts) or "(none)"


async def run_check(url: str, *, connect_timeout: float, echo: Callable[[str], None]) -> int:
    """Connect, EHLO, TLS as the URL says, AUTH if it has credentials; print what was found.

    Returns:
        0 when every step worked, 1 when one failed.

    Raises:
        ConfigError: The URL is invalid.
    """
    server = Server.from_url(url)
    mode = server.tls_mode
    echo(f"server: {server.display}")
    client = aiosmtplib.SMTP(
        hostname=server.host,
        port=server.effective_port,
        use_tls=mode is TLSMode.IMPLICIT,
        start_tls=False,
        tls_context=server.make_ssl_context(),
        local_hostname=server.local_hostname,
        timeout=connect_timeout,
    )
    try:
        response = await client.connect()
        echo(f"greeting: {response.code} {response.message}")
        await client.ehlo()
        wants_tls = mode in (TLSMode.STARTTLS, TLSMode.OPPORTUNISTIC)
        if wants_tls and client.supports_extension("starttls"):
            _extensions(client, echo, "EHLO (before STARTTLS)")
            await client.starttls(tls_context=server.make_ssl_context())
            await client.ehlo()
        elif mode is TLSMode.STARTTLS:
            _extensions(client, echo, "EHLO")
            echo("TLS: FAILED: the server does not offer STARTTLS, which this URL requires")
            return 1
        _extensions(client, echo, "EHLO")
        _tls(client, echo)
        if server.username is None:
            echo("AUTH: not tried (the URL has no user)")
            return 0
        if client.get_transport_info("ssl_object") is None and not server.allow_plaintext_auth:
            echo("AUTH: not tried: the connection is not encrypted (allow_plaintext_auth=1)")
            return 1
        try:
            await client.login(server.username, server.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            echo(f"AUTH: FAILED as {server.username}: {exc.code} {exc.message}")
            return 1
        except aiosmtplib.SMTPException as exc:
            echo(f"AUTH: FAILED as {server.username}: {exc}")
            return 1
        echo(f"AUTH: ok as {server.username}")
        return 0
    except ssl.SSLError as exc:
        echo(f"TLS: FAILED: {exc}")
        return 1
    except (aiosmtplib.SMTPException, OSError) as exc:
        echo(f"connection: FAILED: {type(exc).__name__}: {exc}")
        return 1
    finally:
        transport = client.transport  # (the TLS one after STARTTLS)
        if client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()
        client.close()
        if transport is not None:
            # A TLS close waits for the server's close_notify, and this command returns
            # at once: asyncio.run would end with that still pending and the socket open.
            # After QUIT there is nothing left to say, so drop the connection now.
            cast(asyncio.Transport, transport).abort()  # (uvloop's too: a cast, not a check)


def _extensions(client: aiosmtplib.SMTP, echo: Callable[[str], None], title: str) -> None:
    response = client.last_ehlo_response
    lines = response.message.splitlines()[1:] if response else []
    echo(f"{title}: {', '.join(lines) or '(no extensions)'}")


def _tls(client: aiosmtplib.SMTP, echo: Callable[[str], None]) -> None:
    ssl_object = client.get_transport_info("ssl_object")
    if ssl_object is None:
        echo("TLS: none (plaintext connection)")
        return
    name, _, bits = ssl_object.cipher()
    echo(f"TLS: {ssl_object.version()}, cipher {name} ({bits} bits)")
    cert = ssl_object.getpeercert()
    if cert:
        echo(f"certificate: subject {_subject(cert)}; expires {cert.get('notAfter', '?')}")
    else:
        echo("certificate: not verified, no details available")
