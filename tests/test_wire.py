"""Reply parsing on the wire: any chunking of the byte stream gives the same replies."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncmail._exceptions import Reply
from asyncmail.smtp._wire import Wire, WireClosed


class _Transport(asyncio.Transport):
    """The smallest transport Wire can sit on: it records writes and closing."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x4FFF, exclude_characters="\x7f"),
    max_size=40,
)
_reply = st.tuples(st.integers(200, 599), st.lists(_text, min_size=1, max_size=4))


def _encode(code: int, lines: list[str]) -> bytes:
    out = [f"{code}-{line}\r\n" for line in lines[:-1]] + [f"{code} {lines[-1]}\r\n"]
    return "".join(out).encode()


@settings(max_examples=200, deadline=None)
@given(st.lists(_reply, min_size=1, max_size=6), st.data())
def test_any_chunking_of_replies_parses_the_same(
    replies: list[tuple[int, list[str]]], data: st.DataObject
) -> None:
    stream = b"".join(_encode(code, lines) for code, lines in replies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))

    async def main() -> list[Reply]:
        wire = Wire(_Transport())
        start = 0
        for cut in [*cuts, len(stream)]:
            wire.data_received(stream[start:cut])
            start = cut
        return [await wire.read_reply() for _ in replies]

    parsed = asyncio.run(main())
    assert parsed == [Reply(code, "\n".join(lines)) for code, lines in replies]


async def test_a_reply_line_seen_before_still_ends_a_longer_reply() -> None:
    """One-line replies are remembered by their bytes; as the last line of a multi-line
    reply, the same line ends that reply and is not a reply of its own."""
    wire = Wire(_Transport())
    wire.data_received(b"250 2.1.0 ok\r\n250-first\r\n250 2.1.0 ok\r\n250 2.1.0 ok\r\n")
    replies = [await wire.read_reply() for _ in range(3)]
    assert replies == [
        Reply(250, "2.1.0 ok"),
        Reply(250, "first\n2.1.0 ok"),
        Reply(250, "2.1.0 ok"),
    ]
    assert not wire.has_unread


async def test_a_malformed_reply_closes_the_wire() -> None:
    transport = _Transport()
    wire = Wire(transport)
    wire.data_received(b"hello there\r\n")
    with pytest.raises(WireClosed, match="malformed"):
        await wire.read_reply()
    assert transport.closing


async def test_an_endless_reply_line_is_refused() -> None:
    wire = Wire(_Transport())
    wire.data_received(b"250-" + b"x" * 20_000)
    with pytest.raises(WireClosed, match="too long"):
        await wire.read_reply()


async def test_a_waiting_reader_learns_of_a_lost_connection() -> None:
    wire = Wire(_Transport())
    reader = asyncio.create_task(wire.read_reply())
    await asyncio.sleep(0)
    wire.connection_lost(ConnectionResetError("reset"))
    with pytest.raises(WireClosed, match="reset"):
        await reader
    with pytest.raises(WireClosed):
        wire.write(b"NOOP\r\n")


async def test_a_late_reply_is_a_timeout_and_each_timer_ends_with_its_read() -> None:
    wire = Wire(_Transport())
    with pytest.raises(TimeoutError):
        await wire.read_reply(0.01)
    # a reply in time: the read's timer is cancelled, so it cannot fail a later read
    asyncio.get_running_loop().call_later(0.005, wire.data_received, b"250 first\r\n")
    assert await wire.read_reply(0.05) == Reply(250, "first")
    asyncio.get_running_loop().call_later(0.1, wire.data_received, b"250 second\r\n")
    assert await wire.read_reply(None) == Reply(250, "second")  # waits past 0.05 s


async def test_a_read_with_a_shorter_limit_times_out_on_its_own_deadline() -> None:
    """The one timer a Wire keeps between reads is moved forward for a read that ends sooner."""
    wire = Wire(_Transport())
    loop = asyncio.get_running_loop()
    loop.call_soon(wire.data_received, b"250 first\r\n")
    assert await wire.read_reply(3600) == Reply(250, "first")  # its timer stays armed
    started = loop.time()
    with pytest.raises(TimeoutError):
        await wire.read_reply(0.02)
    assert loop.time() - started < 60  # its own deadline, not the earlier read's hour


async def test_a_read_with_a_longer_limit_outlives_the_timer_of_an_earlier_read() -> None:
    """The timer left by a short read fires during a longer one: it re-arms, it fails nothing."""
    wire = Wire(_Transport())
    loop = asyncio.get_running_loop()
    loop.call_soon(wire.data_received, b"250 first\r\n")
    assert await wire.read_reply(0.01) == Reply(250, "first")  # its timer stays armed
    loop.call_later(0.1, wire.data_received, b"250 second\r\n")
    assert await wire.read_reply(5) == Reply(250, "second")  # waits past 0.01 s
    with pytest.raises(TimeoutError):  # and the re-armed timer still ends a read
        await wire.read_reply(0.01)


async def test_a_server_half_close_drops_what_is_still_queued_at_once() -> None:
    """Bug 1: after the server's FIN, bytes still queued here must never be sent.

    The server stops reading, so a large write stays queued in the transport; then it
    half-closes, and reads on. The queued bytes (the rest of a body, its final dot) must be
    dropped there and then, not flushed by a graceful close while the client counts them
    as lost: the server receives only what had already reached the kernel.
    """
    total = 64 * 1024 * 1024  # far more than the kernel buffers on both sides hold
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
    accepted = asyncio.get_running_loop().create_future()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, _ = await asyncio.get_running_loop().create_connection(
        asyncio.Protocol, "127.0.0.1", port
    )
    wire = Wire(transport)
    server_reader, server_writer = await accepted
    wire.write(b"x" * total)
    server_writer.write_eof()
    with pytest.raises(WireClosed):
        await wire.read_reply(5)
    assert transport.is_closing()
    received = 0
    while chunk := await server_reader.read(1 << 20):
        received += len(chunk)
    assert received < total // 2
    server_writer.transport.abort()
    server.close()
