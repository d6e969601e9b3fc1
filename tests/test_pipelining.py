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
