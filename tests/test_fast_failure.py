"""A wrong port or TLS mode fails the first connection at once, with a hint, and no retry.

Servers are real sockets on 127.0.0.1: raw asyncio servers that play a TLS port or an HTTP
server, and the capture server reached with the wrong scheme. Nothing here measures time:
the greeting timeout is short, and "no retry" is counted in connections and attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncmail import (
    DeliveryError,
    Mailer,
    PermanentError,
    Phase,
    RetryPolicy,
    Server,
    SMTPTimeoutError,
    Status,
    Timeouts,
    TLSError,
    TLSMode,
    WrongEventLoopError,
)
from asyncmail.smtp import _sniff
from asyncmail.smtp._sniff import hint_for, sanitised
from asyncmail.testing import CaptureServer, Fault

from ._support import NO_WAIT_RETRY, SHORT_TIMEOUTS, mailer_for, message, pipe

#: A TLS alert record (fatal, unexpected_message): what a TLS port says to a non-hello.
TLS_ALERT = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x0A])
HTTP_400 = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass
class RawServer:
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""

    port: int = 0
    connections: int = 0


Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(behaviour: Behaviour) -> AsyncIterator[RawServer]:
    """Serve each connection with ``behaviour``; connections are closed on exit."""
    record = RawServer()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record.connections += 1
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            await behaviour(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    record.port = server.sockets[0].getsockname()[1]
    try:
        yield record
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


async def silent_until_spoken_to(
    answer: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Say nothing on connect (a TLS port, an HTTP server); answer the first bytes read."""
    if await reader.read(1024):
        writer.write(answer)
        await writer.drain()
    await reader.read()  # (until the client goes)


async def tls_port(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await silent_until_spoken_to(TLS_ALERT, reader, writer)


async def http_port(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await silent_until_spoken_to(HTTP_400, reader, writer)


async def http_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Speak first, as some proxies and captive portals do."""
    writer.write(HTTP_400)
    await writer.drain()
    await reader.read()


async def never_speaks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # reads whatever comes, answers nothing


@contextlib.asynccontextmanager
async def counting_proxy(port: int, *, slow_start: float = 0.0) -> AsyncIterator[RawServer]:
    """Forward to 127.0.0.1:``port`` and count connections (a TLS server counts only the
    handshakes that succeed). ``slow_start``: hold the server's first bytes that long."""

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer, slow_start))

    async with raw_server(forward) as proxy:
        yield proxy


def plain_mailer(port: int, *, tls: TLSMode = TLSMode.STARTTLS) -> Mailer:
    server = Server(host="127.0.0.1", port=port, tls=tls)
    return Mailer(server, timeouts=SHORT_TIMEOUTS, retry=NO_WAIT_RETRY)


async def failure(mailer: Mailer) -> DeliveryError:
    async with mailer:
        [result] = [r async for r in mailer.send_many([message()])]
    assert result.status is Status.FAILED
    assert isinstance(result.error, DeliveryError)
    assert result.attempts == 1  # (NO_WAIT_RETRY allows 3)
    return result.error


# -- the pure part: what the first bytes (or the port) say ---------------------------------


@pytest.mark.parametrize(
    ("port", "data", "kind", "hint"),
    [
        (465, None, TLSError, "port 465 usually needs smtps://"),
        (2525, TLS_ALERT, TLSError, "this looks like TLS: use smtps://"),
        (2525, b"\x16\x03\x01\x00\x50", TLSError, "this looks like TLS: use smtps://"),
        (25, HTTP_400, PermanentError, "this is not an SMTP server (it answered 'HTTP/1.1 400"),
        (25, b"SSH-2.0-OpenSSH_9.6\r\n", PermanentError, "'SSH-2.0-OpenSSH_9.6'"),
    ],
)
def test_first_bytes_that_are_not_a_greeting_name_the_likely_mistake(
    port: int, data: bytes | None, kind: type[DeliveryError], hint: str
) -> None:
    error = hint_for(port, data)
    assert type(error) is kind
    assert hint in error.text
    assert not error.retryable
    assert error.phase is Phase.GREETING


@pytest.mark.parametrize(
    ("port", "data"),
    [(25, b"220 mx ESMTP\r\n"), (587, b"2"), (465, b"220 "), (25, None), (25, b"")],
)
def test_a_greeting_or_mere_silence_on_another_port_is_no_evidence(
    port: int, data: bytes | None
) -> None:
    assert hint_for(port, data) is None


@given(st.binary(max_size=200))
def test_what_a_server_sent_is_quoted_short_and_printable(data: bytes) -> None:
    text = sanitised(data)
    assert text.isascii() and text.isprintable()
    assert len(text) <= 43


# -- against real sockets ----------------------------------------------------------------


async def test_smtp_to_a_silent_tls_port_fails_once_with_the_smtps_hint() -> None:
    async with raw_server(tls_port) as srv:
        error = await failure(plain_mailer(srv.port))
    assert isinstance(error, TLSError)
    assert "this looks like TLS: use smtps://" in error.text
    assert not error.retryable
    assert srv.connections == 1


async def test_smtp_to_an_implicit_tls_capture_server_fails_once_with_the_smtps_hint() -> None:
    async with CaptureServer(tls="implicit") as srv, counting_proxy(srv.port) as proxy:
        error = await failure(plain_mailer(proxy.port))
    assert isinstance(error, TLSError)
    assert "this looks like TLS: use smtps://" in error.text
    assert proxy.connections == 1


async def test_smtp_to_an_http_server_fails_once_saying_it_is_not_smtp() -> None:
    async with raw_server(http_port) as srv:
        error = await failure(plain_mailer(srv.port))
    assert type(error) is PermanentError
    assert "this is not an SMTP server (it answered 'HTTP/1.1 400 Bad Request')" in error.text
    assert srv.connections == 1


async def test_a_server_that_speaks_http_first_fails_once_saying_it_is_not_smtp() -> None:
    async with raw_server(http_first) as srv:
        error = await failure(plain_mailer(srv.port, tls=TLSMode.NONE))
    assert type(error) is PermanentError
    assert "this is not an SMTP server" in error.text
    assert srv.connections == 1


@pytest.mark.parametrize("capture_tls", ["starttls", "none"])
async def test_smtps_to_a_plain_smtp_port_says_to_use_smtp(capture_tls: str) -> None:
    async with CaptureServer(tls=capture_tls) as srv:  # type: ignore[arg-type]
        mailer = mailer_for(srv, tls=TLSMode.IMPLICIT, timeouts=SHORT_TIMEOUTS, retry=NO_WAIT_RETRY)
        error = await failure(mailer)
        assert srv.connections_opened == 1
    assert isinstance(error, TLSError)
    assert "use smtp:// (STARTTLS), usually port 587" in error.text
    assert "WRONG_VERSION_NUMBER" not in error.text


async def test_a_server_silent_to_everything_gets_the_short_first_greeting_limit() -> None:
    """No evidence of a wrong port: a transient timeout (it may be a slow server), but
    after the first-greeting limit, and saying it was the first connection."""
    async with raw_server(never_speaks) as srv:
        mailer = Mailer(
            Server(host="127.0.0.1", port=srv.port, tls=TLSMode.NONE),
            timeouts=SHORT_TIMEOUTS,
            retry=RetryPolicy(attempts=1),
        )
        error = await failure(mailer)
    assert isinstance(error, SMTPTimeoutError)
    assert error.retryable
    assert "no greeting within 0.5 s on the first connection" in error.text
    assert srv.connections == 1


async def test_a_relay_that_greeted_before_and_then_stalls_is_retried_as_usual() -> None:
    async with CaptureServer() as srv:
        mailer = mailer_for(
            srv, timeouts=SHORT_TIMEOUTS, retry=NO_WAIT_RETRY, max_messages_per_connection=1
        )
        async with mailer:
            assert (await mailer.send(message())).ok
            srv.inject(Fault.stall("greeting", times=1))
            result = await mailer.send(message())
        opened = srv.connections_opened
    assert result.ok
    assert result.attempts == 2  # the stalled greeting was a transient failure, retried
    assert opened == 3


async def test_a_relay_that_greeted_before_times_out_with_the_ordinary_error() -> None:
    async with CaptureServer() as srv:
        mailer = mailer_for(
            srv, timeouts=SHORT_TIMEOUTS, retry=NO_WAIT_RETRY, max_messages_per_connection=1
        )
        async with mailer:
            assert (await mailer.send(message())).ok
            srv.inject(Fault.stall("greeting", times=None))
            [result] = [r async for r in mailer.send_many([message()])]
    assert isinstance(result.error, SMTPTimeoutError)
    assert "first connection" not in result.error.text
    assert result.attempts == 3


# -- a Mailer used in an event loop it was not opened in -----------------------------------


def test_a_mailer_used_in_a_second_event_loop_raises_a_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with CaptureServer().run_in_thread() as srv:
        mailer = mailer_for(srv)
        asyncio.run(mailer.__aenter__())
        caplog.set_level(logging.DEBUG, logger="asyncmail")
        with pytest.raises(WrongEventLoopError, match="create the Mailer inside the event loop"):
            asyncio.run(mailer.send(message()))

        async def many() -> None:
            mailer.send_many([message()])

        with pytest.raises(WrongEventLoopError, match=r"use asyncmail\.SyncMailer"):
            asyncio.run(many())
        assert srv.connections_opened == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


async def test_an_event_loop_that_cannot_watch_sockets_still_connects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows' proactor loop has no add_reader: the first connection is then not sniffed."""

    def unsupported(*args: object) -> None:
        raise NotImplementedError

    loop = asyncio.get_running_loop()
    try:
        monkeypatch.setattr(loop, "add_reader", unsupported)
    except AttributeError:
        pytest.skip("this loop's methods cannot be replaced (uvloop)")
    async with CaptureServer() as srv:
        async with mailer_for(srv, timeouts=SHORT_TIMEOUTS) as mailer:
            result = await mailer.send(message())
    assert result.ok
    assert result.attempts == 1


async def test_a_server_that_greets_after_the_first_limit_is_waited_for_next_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slow greeting that answers the probe's TLS hello is an SMTP server, not a wrong
    setting: that connection is spoilt, but the next one waits the whole greeting timeout."""
    monkeypatch.setattr(_sniff, "FIRST_GREETING", 0.2)
    timeouts = Timeouts(connect=5, greeting=3, command=2, data_start=2, data_transfer=5)
    async with CaptureServer() as srv, counting_proxy(srv.port, slow_start=0.3) as proxy:
        server = Server(host="127.0.0.1", port=proxy.port, tls=TLSMode.NONE)
        async with Mailer(server, timeouts=timeouts, retry=NO_WAIT_RETRY) as mailer:
            result = await mailer.send(message())
    assert result.ok
    assert result.attempts == 2  # the spoilt first connection, then a normal one
    assert proxy.connections == 2
