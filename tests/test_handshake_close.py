"""A refused handshake leaves nothing behind in the event loop: no transport on a dead socket."""

from __future__ import annotations

import asyncio

import pytest

from asyncmail import AuthenticationError, Mailer
from asyncmail.testing import CaptureServer, Fault

from ._support import message


def _orphans() -> list[object]:
    """Transports the loop still reads for whose socket is already closed (asyncio only)."""
    loop = asyncio.get_running_loop()
    found = []
    for transport in list(getattr(loop, "_transports", {}).values()):
        sock = transport.get_extra_info("socket")
        if not transport.is_closing() and (sock is None or sock.fileno() == -1):
            found.append(transport)
    return found


async def test_a_refused_auth_over_tls_leaves_no_transport_on_a_closed_socket() -> None:
    """Found against Postfix: after QUIT the server keeps the TLS session open; closing the
    socket under its transport left the loop a transport on a dead descriptor, and the next
    connection that got the same descriptor failed with "File descriptor N is used by
    transport"."""
    quit_stays_open = Fault(kind="reply", phase="quit", code=221, times=None)
    async with CaptureServer(tls="implicit", auth={"u": "good"}, faults=[quit_stays_open]) as srv:
        bad = f"smtps://u:bad@127.0.0.1:{srv.port}?ca_file={srv.ca_file}"
        good = f"smtps://u:good@127.0.0.1:{srv.port}?ca_file={srv.ca_file}"
        for _ in range(3):
            async with Mailer(bad) as mailer:
                with pytest.raises(AuthenticationError):
                    await mailer.send(message())
            assert _orphans() == []
        async with Mailer(good) as mailer:
            result = await mailer.send(message())
        assert result.ok
