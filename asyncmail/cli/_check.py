"""``asyncmail check URL``: a connection diagnostic that sends nothing.

It runs the one handshake the pool uses (``asyncmail.smtp._handshake``), so it applies the
same rules (STARTTLS required unless the URL says otherwise, no AUTH over plaintext, one AUTH
mechanism tried once) and prints what each step found as it happens, so a later failure still
shows what came before it. The password is used for AUTH and never printed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .._config import Server, Timeouts
from .._exceptions import DeliveryError
from ..smtp._handshake import abort, handshake
from ._failure import failure_lines

__all__ = ["run_check"]

logger = logging.getLogger("asyncmail")

_TITLES = {
    "greeting": "greeting",
    "ehlo": "EHLO",
    "tls": "TLS",
    "certificate": "certificate",
}
_QUIT_TIMEOUT = 2.0


async def run_check(url: str, *, connect_timeout: float, echo: Callable[[str], None]) -> int:
    """Connect, EHLO, TLS as the URL says, AUTH if it has credentials; print what was found.

    Returns:
        0 when every step worked, 1 when one failed.

    Raises:
        ConfigError: The URL is invalid.
    """
    server = Server.from_url(url)
    echo(f"server: {server.display}")

    def transcript(step: str, text: str) -> None:
        if step == "auth":
            mechanism = text.partition(" ")[0]
            echo(f"AUTH: ok as {server.username} ({mechanism})")
        else:
            echo(f"{_TITLES.get(step, step)}: {text}")

    timeouts = Timeouts(connect=connect_timeout, greeting=connect_timeout, command=connect_timeout)
    try:
        session = await handshake(server, timeouts, transcript=transcript, first=True)
    except DeliveryError as error:
        for line in failure_lines(error, server):
            echo(line)
        return 1
    if server.username is None:
        echo("AUTH: not tried (the URL has no user)")
    try:
        async with asyncio.timeout(min(connect_timeout, _QUIT_TIMEOUT)):
            await session.client.quit()
    except Exception as exc:  # the check is done; QUIT is a courtesy
        logger.debug("check: QUIT failed: %r", exc)
    finally:
        # A TLS close waits for the server's close_notify, and this command returns at
        # once: asyncio.run would end with that still pending and the socket open. After
        # QUIT there is nothing left to say, so drop the connection now: the session's own
        # transport, since aiosmtplib's quit() starts that close and then lets go of it.
        session.transport.abort()
        abort(session.client)
    return 0
