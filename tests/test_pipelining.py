"""RFC 2920 at the byte level: grouped commands when offered, one at a time when not."""

from __future__ import annotations

from asyncmail.testing import CaptureServer

from ._support import mailer_for, message


def _chunks_with(server: CaptureServer, token: bytes) -> list[bytes]:
    return [c for s in server.sessions for c in s.chunks if token in c]


async def test_mail_rcpt_and_data_arrive_in_one_write_when_pipelining_is_offered() -> None:
    recipients = ["a@example.org", "b@example.org", "c@example.org"]
    async with CaptureServer(pipelining=True, record_chunks=True) as server:
        async with mailer_for(server) as mailer:
            await mailer.send(message(to=recipients))
    [group] = _chunks_with(server, b"MAIL FROM:")
    assert group.startswith(b"MAIL FROM:<shop@example.com>")
    assert group.count(b"RCPT TO:") == 3
    assert group.endswith(b"DATA\r\n")
    assert len(server.messages) == 1


async def test_commands_go_one_per_round_trip_without_pipelining() -> None:
    async with CaptureServer(pipelining=False, record_chunks=True) as server:
        async with mailer_for(server) as mailer:
            await mailer.send(message(to=["a@example.org", "b@example.org"]))
    [mail] = _chunks_with(server, b"MAIL FROM:")
    assert b"RCPT" not in mail
    rcpts = _chunks_with(server, b"RCPT TO:")
    assert len(rcpts) == 2
    assert all(c.count(b"RCPT TO:") == 1 and b"DATA" not in c for c in rcpts)


async def test_pipelining_can_be_switched_off_by_the_user() -> None:
    async with CaptureServer(pipelining=True, record_chunks=True) as server:
        async with mailer_for(server, pipelining=False) as mailer:
            await mailer.send(message(to=["a@example.org", "b@example.org"]))
    [mail] = _chunks_with(server, b"MAIL FROM:")
    assert b"RCPT" not in mail


async def test_send_many_chains_the_next_envelope_behind_the_final_dot() -> None:
    """A chunk holding one message's final dot and the next MAIL FROM proves the client
    sent the next transaction before the reply to the dot: one round trip per message."""
    async with CaptureServer(pipelining=True, record_chunks=True) as server:
        async with mailer_for(server, max_connections=1) as mailer:
            results = [r async for r in mailer.send_many(message(i) for i in range(20))]
    assert len(results) == 20
    assert len(server.messages) == 20
    assert server.connections_opened == 1
    chained = _chunks_with(server, b"\r\n.\r\nMAIL FROM:")
    assert len(chained) >= 10


async def test_send_many_does_not_chain_without_pipelining() -> None:
    async with CaptureServer(pipelining=False, record_chunks=True) as server:
        async with mailer_for(server, max_connections=1) as mailer:
            results = [r async for r in mailer.send_many(message(i) for i in range(10))]
    assert len(results) == 10
    assert _chunks_with(server, b"\r\n.\r\nMAIL FROM:") == []
    assert server.connections_opened == 1
