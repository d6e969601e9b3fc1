"""CaptureServer CHUNKING (RFC 3030): BDAT from a raw client, and faults at each BDAT phase."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from asyncmail.testing import CapturedMessage, CaptureServer, Fault

SENDER = "alice@example.com"
RCPT = "bob@example.com"
MESSAGE = b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: Chunked\r\n\r\nHi Bob\r\n"

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def connect(server: CaptureServer, *, ehlo: bool = True) -> AsyncIterator[Conn]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        assert (await reply(reader)).startswith(b"220")
        if ehlo:
            writer.write(b"EHLO client.example\r\n")
            assert (await reply(reader)).startswith(b"250")
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):  # the server may have reset the connection
            await writer.wait_closed()


async def reply(reader: asyncio.StreamReader) -> bytes:
    """One whole (possibly multi-line) reply."""
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return b"".join(lines)


async def codes(reader: asyncio.StreamReader, count: int) -> list[int]:
    return [int((await reply(reader))[:3]) for _ in range(count)]


def envelope(sender: str = SENDER, rcpt: str = RCPT) -> bytes:
    return f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\n".encode()


def bdat(*chunks: bytes) -> bytes:
    """The BDAT commands and octets for ``chunks``, the last one marked LAST."""
    out = b""
    for i, chunk in enumerate(chunks):
        last = b" LAST" if i == len(chunks) - 1 else b""
        out += b"BDAT %d%s\r\n" % (len(chunk), last) + chunk
    return out


async def send(conn: Conn, *chunks: bytes) -> list[int]:
    """One whole transaction in one write; the codes of its 2 + len(chunks) replies."""
    reader, writer = conn
    writer.write(envelope() + bdat(*chunks))
    return await codes(reader, 2 + len(chunks))


async def test_chunking_is_advertised_only_when_asked_for() -> None:
    async with CaptureServer(chunking=True) as server, connect(server, ehlo=False) as (r, w):
        w.write(b"EHLO client.example\r\n")
        assert b"250-CHUNKING\r\n" in await reply(r)
    async with CaptureServer() as server, connect(server, ehlo=False) as (r, w):
        w.write(b"EHLO client.example\r\n")
        assert b"CHUNKING" not in await reply(r)


async def test_without_chunking_bdat_is_an_unknown_command() -> None:
    async with CaptureServer() as server, connect(server) as (reader, writer):
        writer.write(envelope() + b"BDAT 4 LAST\r\n")
        assert await codes(reader, 3) == [250, 250, 500]
        assert server.messages == []


async def test_one_chunk_is_stored_like_data_with_its_chunk_size() -> None:
    async with CaptureServer(chunking=True) as server, connect(server) as conn:
        assert await send(conn, MESSAGE) == [250, 250, 250]
        [captured] = await server.wait_for_messages(1)
    assert captured.data == MESSAGE
    assert captured.chunks == (len(MESSAGE),)
    assert captured.envelope_sender == SENDER
    assert captured.recipients == (RCPT,)
    assert captured.parsed["Subject"] == "Chunked"
    assert server.sessions[0].commands[-1] == f"BDAT {len(MESSAGE)} LAST"


async def test_several_chunks_are_joined_in_order() -> None:
    parts = (MESSAGE[:10], MESSAGE[10:11], MESSAGE[11:])
    async with CaptureServer(chunking=True) as server, connect(server) as conn:
        assert await send(conn, *parts) == [250] * 5
        [captured] = await server.wait_for_messages(1)
    assert captured.data == MESSAGE
    assert captured.chunks == (10, 1, len(MESSAGE) - 11)


async def test_chunk_octets_are_stored_verbatim_even_if_they_look_like_commands() -> None:
    tricky = MESSAGE + b"\r\n.\r\nQUIT\r\n..dots\rbare CR\nbare LF\x00\xff"
    async with CaptureServer(chunking=True) as server, connect(server) as conn:
        assert await send(conn, tricky[:20], tricky[20:]) == [250] * 4
        [captured] = await server.wait_for_messages(1)
        assert "QUIT" not in server.sessions[0].commands
    assert captured.data == tricky


async def test_bdat_0_last_ends_the_message() -> None:
    async with CaptureServer(chunking=True) as server, connect(server) as conn:
        assert await send(conn, MESSAGE, b"") == [250] * 4
        [captured] = await server.wait_for_messages(1)
    assert captured.data == MESSAGE
    assert captured.chunks == (len(MESSAGE), 0)


async def test_three_pipelined_transactions_in_one_write_are_answered_in_order() -> None:
    bodies = [MESSAGE + b"number %d\r\n" % i for i in range(3)]
    async with CaptureServer(chunking=True) as server, connect(server) as (reader, writer):
        writer.write(b"".join(envelope() + bdat(body[:5], body[5:]) for body in bodies))
        assert await codes(reader, 12) == [250] * 12
        captured = await server.wait_for_messages(3)
    assert [m.data for m in captured] == bodies


async def test_bdat_without_rcpt_is_refused_and_its_octets_are_skipped() -> None:
    async with CaptureServer(chunking=True) as server, connect(server) as (reader, writer):
        writer.write(b"BDAT 12 LAST\r\nMAIL FROM:<x")  # octets that look like a command
        assert await codes(reader, 1) == [503]
        assert await send((reader, writer), MESSAGE) == [250, 250, 250]
        [captured] = await server.wait_for_messages(1)
    assert captured.data == MESSAGE


async def test_bdat_after_every_recipient_was_refused_stores_nothing() -> None:
    faults = [Fault.reply("rcpt", 550, "5.1.1 No such user")]
    async with CaptureServer(chunking=True, faults=faults) as server, connect(server) as conn:
        assert await send(conn, MESSAGE) == [250, 550, 503]
        reader, writer = conn
        writer.write(b"NOOP\r\n")
        assert await codes(reader, 1) == [250]
        assert server.messages == []


async def test_data_after_bdat_in_the_same_transaction_is_refused() -> None:
    async with CaptureServer(chunking=True) as server, connect(server) as (reader, writer):
        writer.write(envelope() + bdat(b"x", b"")[: len(b"BDAT 1\r\nx")] + b"DATA\r\n")
        assert await codes(reader, 4) == [250, 250, 250, 503]
        writer.write(b"RSET\r\n" + envelope() + bdat(MESSAGE))
        assert await codes(reader, 4) == [250, 250, 250, 250]
        [captured] = await server.wait_for_messages(1)
    assert captured.data == MESSAGE


async def test_reply_fault_at_bdat_last_refuses_the_message() -> None:
    faults = [Fault.reply("bdat_last", 554, "5.7.1 Spam", times=1)]
    async with CaptureServer(chunking=True, faults=faults) as server, connect(server) as conn:
        assert await send(conn, MESSAGE[:7], MESSAGE[7:]) == [250, 250, 250, 554]
        assert server.messages == []
        assert await send(conn, MESSAGE) == [250, 250, 250]  # the transaction was over
        assert len(await server.wait_for_messages(1)) == 1


async def test_reply_fault_at_a_chunk_fails_the_rest_of_the_transaction() -> None:
    faults = [Fault.reply("bdat", 452, "4.3.1 Out of memory", times=1)]
    async with CaptureServer(chunking=True, faults=faults) as server, connect(server) as conn:
        assert await send(conn, MESSAGE[:7], MESSAGE[7:]) == [250, 250, 452, 503]
        reader, writer = conn
        writer.write(b"RSET\r\n")
        assert await codes(reader, 1) == [250]
        assert server.messages == []
        assert await send(conn, MESSAGE[:7], MESSAGE[7:]) == [250] * 4
        [captured] = await server.wait_for_messages(1)
    assert captured.data == MESSAGE


async def test_421_at_a_chunk_answers_then_closes() -> None:
    faults = [Fault.reply("bdat", 421)]
    async with CaptureServer(chunking=True, faults=faults) as server, connect(server) as conn:
        reader, writer = conn
        writer.write(envelope() + bdat(MESSAGE[:7], MESSAGE[7:]))
        assert await codes(reader, 3) == [250, 250, 421]
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed; no reply to LAST
        assert server.messages == []


async def test_disconnect_mid_data_counts_octets_across_chunks_and_stores_nothing() -> None:
    faults = [Fault.disconnect_mid_data(after_bytes=12)]
    async with CaptureServer(chunking=True, faults=faults) as server, connect(server) as conn:
        reader, writer = conn
        writer.write(envelope() + b"BDAT 7\r\n" + MESSAGE[:7])  # not yet the last chunk
        assert await codes(reader, 3) == [250, 250, 250]
        writer.write(bdat(MESSAGE[7:]))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert server.messages == []


async def test_stall_mid_data_swallows_the_rest_and_stores_nothing() -> None:
    faults = [Fault.stall("mid_data", after_bytes=3)]
    async with CaptureServer(chunking=True, faults=faults) as server, connect(server) as conn:
        reader, writer = conn
        writer.write(envelope() + bdat(MESSAGE[:7], MESSAGE[7:]) + b"NOOP\r\n")
        assert await codes(reader, 2) == [250, 250]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readline(), 0.2)
        assert server.messages == []


@pytest.mark.parametrize("phase", ["bdat", "bdat_last"])
async def test_disconnect_fault_at_bdat_phases(phase: str) -> None:
    faults = [Fault.disconnect(phase)]  # type: ignore[arg-type]
    async with CaptureServer(chunking=True, faults=faults) as server, connect(server) as conn:
        reader, writer = conn
        writer.write(envelope() + bdat(MESSAGE[:7], MESSAGE[7:]))
        assert await codes(reader, 2) == [250, 250]
        chunk_replies = await asyncio.wait_for(reader.read(), 5)
        stored = server.messages
    # at "bdat_last" the message was stored before the connection dropped, as at "dot"
    assert (chunk_replies.startswith(b"250"), len(stored)) == (
        (True, 1) if phase == "bdat_last" else (False, 0)
    )


async def test_stall_at_bdat_last_stores_but_never_answers() -> None:
    faults = [Fault.stall("bdat_last")]
    async with CaptureServer(chunking=True, faults=faults) as server, connect(server) as conn:
        reader, writer = conn
        writer.write(envelope() + bdat(MESSAGE))
        assert await codes(reader, 2) == [250, 250]
        await server.wait_for_messages(1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readline(), 0.2)


async def test_delay_at_bdat_phases_answers_normally_and_stores_first() -> None:
    faults = [Fault.delay("bdat", 0.05), Fault.delay("bdat_last", 0.05)]
    async with CaptureServer(chunking=True, faults=faults) as server, connect(server) as conn:
        assert await send(conn, MESSAGE[:7], MESSAGE[7:]) == [250] * 4
        [captured] = await server.wait_for_messages(1)
    assert captured.data == MESSAGE


async def test_match_at_bdat_last_looks_into_the_content() -> None:
    faults = [Fault.reply("bdat_last", 550, match="subject: chunked")]
    async with CaptureServer(chunking=True, faults=faults) as server, connect(server) as conn:
        assert await send(conn, MESSAGE) == [250, 250, 550]
        assert await send(conn, b"Subject: other\r\n\r\nx\r\n") == [250, 250, 250]
        assert len(await server.wait_for_messages(1)) == 1


async def test_a_failing_sink_answers_500_to_bdat_last_and_resets_the_transaction() -> None:
    def full_disk(message: CapturedMessage) -> None:
        raise OSError(28, "No space left on device")

    async with (
        CaptureServer(chunking=True, on_message=full_disk) as server,
        connect(server) as conn,
    ):
        assert await send(conn, MESSAGE) == [250, 250, 500]
        assert await send(conn, MESSAGE) == [250, 250, 500]  # a fresh MAIL is accepted
        assert server.statistics().messages == 0


async def test_malformed_bdat_gets_501() -> None:
    async with CaptureServer(chunking=True) as server, connect(server) as (reader, writer):
        writer.write(envelope() + b"BDAT ten LAST\r\nBDAT 3 NOTLAST\r\nBDAT\r\n")
        assert await codes(reader, 5) == [250, 250, 501, 501, 501]
        assert server.messages == []


async def test_bdat_before_ehlo_or_auth_is_refused_and_its_octets_are_skipped() -> None:
    async with CaptureServer(chunking=True) as server, connect(server, ehlo=False) as conn:
        reader, writer = conn
        writer.write(b"BDAT 6 LAST\r\nRSET\r\nNOOP\r\n")
        assert await codes(reader, 2) == [503, 250]
    async with CaptureServer(chunking=True, auth={"u": "p"}, require_auth=True) as server:
        async with connect(server) as (reader, writer):
            writer.write(b"BDAT 6 LAST\r\nRSET\r\nNOOP\r\n")
            assert await codes(reader, 2) == [530, 250]


async def test_a_client_gone_within_a_chunk_leaves_nothing_stored() -> None:
    async with CaptureServer(chunking=True) as server:
        async with connect(server) as (reader, writer):
            writer.write(envelope() + b"BDAT 100 LAST\r\n" + MESSAGE[:10])
            assert await codes(reader, 2) == [250, 250]
    # the server has stopped: every connection task has ended
    assert server.sessions[0].closed
    assert server.messages == []


async def test_data_still_works_and_dot_and_bdat_last_faults_keep_to_their_command() -> None:
    faults = [Fault.reply("dot", 554, times=1), Fault.reply("bdat_last", 552, times=1)]
    async with CaptureServer(chunking=True, faults=faults) as server, connect(server) as conn:
        reader, writer = conn
        writer.write(envelope() + b"DATA\r\n")
        assert await codes(reader, 3) == [250, 250, 354]
        writer.write(b"..dot-stuffed\r\n.\r\n")
        assert await codes(reader, 1) == [554]
        assert await send(conn, MESSAGE) == [250, 250, 552]
        writer.write(envelope() + b"DATA\r\n")
        assert await codes(reader, 3) == [250, 250, 354]
        writer.write(b"..dot-stuffed\r\n.\r\n")
        assert await codes(reader, 1) == [250]
        [captured] = await server.wait_for_messages(1)
    assert captured.data == b".dot-stuffed\r\n"
    assert captured.chunks == ()


async def test_a_message_over_the_size_limit_is_refused_with_552_and_dropped() -> None:
    async with CaptureServer(chunking=True) as server, connect(server) as conn:
        reader, writer = conn
        limit = 33554432  # aiosmtpd's default data_size_limit
        writer.write(envelope() + b"BDAT 10\r\n" + MESSAGE[:10])
        writer.write(b"BDAT %d LAST\r\n" % limit + bytes(limit))
        assert await codes(reader, 4) == [250, 250, 250, 552]
        writer.write(b"RSET\r\n" + envelope() + bdat(MESSAGE))
        assert await codes(reader, 4) == [250] * 4
        [captured] = await server.wait_for_messages(1)
    assert captured.data == MESSAGE
