"""BDAT (RFC 3030 CHUNKING) windows: many messages per round trip, one outcome each.

The capture server offers CHUNKING with ``chunking=True``. Each test asserts what the
server stored (copies per recipient) next to the results, so an outcome is never taken on
the client's word alone.
"""

from __future__ import annotations

import pytest

from asyncmail import (
    ConfigError,
    Mailer,
    Message,
    Phase,
    Rejected,
    RetryPolicy,
    SendResult,
    Server,
    Status,
    TemporaryFailure,
    UnknownOutcomeError,
)
from asyncmail.engine import _window
from asyncmail.testing import CaptureServer, Fault

from ._support import copies, first_recipient, mailer_for, message

ONE_ATTEMPT = RetryPolicy(attempts=1)


def _commands(server: CaptureServer) -> list[str]:
    return [c for s in server.sessions for c in s.commands]


def _by_recipient(results: list[SendResult[Message]]) -> dict[str, SendResult[Message]]:
    return {first_recipient(r): r for r in results}


async def _send_all(mailer: Mailer, count: int) -> dict[str, SendResult[Message]]:
    results = [r async for r in mailer.send_many(message(i) for i in range(count))]
    assert len(results) == count
    return _by_recipient(results)


async def test_send_many_puts_several_messages_in_flight_before_the_first_reply() -> None:
    """The server holds its reply to the first message; a read holding three or more BDAT
    commands shows the client wrote them without waiting for that reply."""
    fault = Fault.delay("bdat_last", 0.3, match="user0@", times=1)
    async with CaptureServer(chunking=True, record_chunks=True, faults=[fault]) as server:
        async with mailer_for(server, max_connections=1) as mailer:
            results = await _send_all(mailer, 20)
    assert {r.status for r in results.values()} == {Status.DELIVERED}
    assert len(server.messages) == 20
    assert server.connections_opened == 1
    assert all(m.chunks for m in server.messages)  # every one came by BDAT
    assert "DATA" not in _commands(server)
    reads = [c for s in server.sessions for c in s.chunks]
    assert max(c.count(b"BDAT ") for c in reads) >= 3


async def test_the_window_bounds_the_messages_in_flight() -> None:
    """With a window of 1 nothing is written behind an open transaction, so no RSET is
    needed in front of one, and no read holds two messages."""
    async with CaptureServer(chunking=True, record_chunks=True) as server:
        async with mailer_for(server, max_connections=1, chunking_window=1) as mailer:
            results = await _send_all(mailer, 10)
    assert {r.status for r in results.values()} == {Status.DELIVERED}
    assert len(server.messages) == 10
    assert "RSET" not in _commands(server)
    reads = [c for s in server.sessions for c in s.chunks]
    assert max(c.count(b"BDAT ") for c in reads) == 1


async def test_the_content_goes_as_it_is_without_dot_stuffing() -> None:
    text = ".starts with a dot\n..two dots\n.\nend"
    async with CaptureServer(chunking=True) as server:
        async with mailer_for(server) as mailer:
            result = await mailer.send(message(text=text))
    assert result.status is Status.DELIVERED
    [stored] = server.messages
    assert stored.chunks == (len(stored.data),)
    body = stored.data.split(b"\r\n\r\n", 1)[1]
    assert b"\r\n.starts with a dot\r\n..two dots\r\n.\r\nend" in body


async def test_a_message_over_the_chunk_size_goes_in_several_chunks() -> None:
    text = "line of text\n" * (2 * 1024 * 1024 // 13)
    async with CaptureServer(chunking=True) as server:
        async with mailer_for(server) as mailer:
            result = await mailer.send(message(text=text))
    assert result.status is Status.DELIVERED
    [stored] = server.messages
    assert len(stored.chunks) >= 3
    assert sum(stored.chunks) == len(stored.data)
    assert max(stored.chunks) <= 1024 * 1024
    assert stored.data.count(b"line of text\r\n") == 2 * 1024 * 1024 // 13


async def test_a_refused_recipient_mid_window_fails_that_message_only() -> None:
    """RCPT 550 for one message: the server answers its BDAT with an error and stores
    nothing; the messages around it in the window are delivered on the same connection."""
    faults = [Fault.reply("rcpt", 550, "5.1.1 No such user", match="user3@")]
    async with CaptureServer(chunking=True, faults=faults) as server:
        async with mailer_for(server, max_connections=1) as mailer:
            results = await _send_all(mailer, 12)
    refused = results.pop("user3@example.net")
    assert refused.status is Status.FAILED
    assert isinstance(refused.error, Rejected)
    assert refused.error.code == 550
    assert refused.error.phase is Phase.RCPT
    assert copies(server, "user3@example.net") == 0
    assert {r.status for r in results.values()} == {Status.DELIVERED}
    assert all(copies(server, rcpt) == 1 for rcpt in results)
    assert server.connections_opened == 1


async def test_a_refused_mail_from_mid_window_fails_that_message_only() -> None:
    faults = [Fault.reply("mail", 553, "5.7.1 Sender refused", times=1)]
    async with CaptureServer(chunking=True, faults=faults) as server:
        async with mailer_for(server, max_connections=1, retry=ONE_ATTEMPT) as mailer:
            results = await _send_all(mailer, 6)
    failed = [r for r in results.values() if r.status is Status.FAILED]
    assert len(failed) == 1
    assert isinstance(failed[0].error, Rejected)
    assert failed[0].error.code == 553
    assert failed[0].error.phase is Phase.MAIL
    assert len(server.messages) == 5
    assert all(copies(server, rcpt) == 1 for rcpt, r in results.items() if r.ok)


async def test_a_refused_last_chunk_fails_its_message_and_the_next_ones_go_on() -> None:
    faults = [Fault.reply("bdat_last", 554, "5.6.0 Content refused", match="Hello 2\r\n")]
    async with CaptureServer(chunking=True, faults=faults) as server:
        async with mailer_for(server, max_connections=1) as mailer:
            results = await _send_all(mailer, 8)
    refused = results.pop("user2@example.net")
    assert refused.status is Status.FAILED
    assert isinstance(refused.error, Rejected)
    assert (refused.error.code, refused.error.phase) == (554, Phase.FINAL_REPLY)
    assert copies(server, "user2@example.net") == 0
    assert {r.status for r in results.values()} == {Status.DELIVERED}
    assert all(copies(server, rcpt) == 1 for rcpt in results)
    assert server.connections_opened == 1


async def test_a_temporary_refusal_of_the_last_chunk_is_retried_once_delivered_once() -> None:
    faults = [Fault.reply("bdat_last", 451, "4.3.0 Try later", match="Hello 1\r\n", times=1)]
    async with CaptureServer(chunking=True, faults=faults) as server:
        async with mailer_for(server, max_connections=1) as mailer:
            results = await _send_all(mailer, 5)
    assert {r.status for r in results.values()} == {Status.DELIVERED}
    assert results["user1@example.net"].attempts == 2
    assert all(copies(server, rcpt) == 1 for rcpt in results)


async def test_a_disconnect_mid_window_leaves_what_was_sent_unknown_and_never_resends_it() -> None:
    """The server stores message 2 and drops the connection before replying. Message 2 and
    any message written behind it end UNKNOWN (their last chunk had left) and are not sent
    again; messages not yet written are delivered on a new connection."""
    faults = [Fault.disconnect("bdat_last", match="Hello 2\r\n", times=1)]
    async with CaptureServer(chunking=True, faults=faults) as server:
        async with mailer_for(server, max_connections=1) as mailer:
            results = await _send_all(mailer, 16)
    statuses = {rcpt: r.status for rcpt, r in results.items()}
    assert statuses["user2@example.net"] is Status.UNKNOWN
    unknown = [rcpt for rcpt, status in statuses.items() if status is Status.UNKNOWN]
    assert 1 <= len(unknown) <= 8  # at most a window
    for rcpt in unknown:
        error = results[rcpt].error
        assert isinstance(error, UnknownOutcomeError)
        assert "BDAT" in str(error)
        assert results[rcpt].attempts == 1
    assert copies(server, "user2@example.net") == 1
    for rcpt, status in statuses.items():
        assert copies(server, rcpt) <= 1  # never a second copy
        if status is Status.DELIVERED:
            assert copies(server, rcpt) == 1
        else:
            assert status is Status.UNKNOWN
    assert server.connections_opened == 2


async def test_a_421_mid_window_retries_the_messages_behind_it_without_unknowns() -> None:
    """A 421 closes the session: the server read nothing after it, so the messages written
    behind the refused one are sent again on a new connection, each stored once."""
    faults = [Fault.reply("bdat_last", 421, "4.3.2 Shutting down", match="Hello 1\r\n", times=1)]
    async with CaptureServer(chunking=True, faults=faults) as server:
        async with mailer_for(server, max_connections=1) as mailer:
            results = await _send_all(mailer, 12)
    assert {r.status for r in results.values()} == {Status.DELIVERED}
    assert all(copies(server, rcpt) == 1 for rcpt in results)
    assert results["user1@example.net"].attempts == 2
    assert server.connections_opened == 2


async def test_a_421_mid_window_without_retries_reports_the_refused_message_only() -> None:
    faults = [Fault.reply("bdat_last", 421, "4.3.2 Shutting down", match="Hello 1\r\n")]
    async with CaptureServer(chunking=True, faults=faults) as server:
        async with mailer_for(server, max_connections=1, retry=ONE_ATTEMPT) as mailer:
            results = await _send_all(mailer, 6)
    refused = results.pop("user1@example.net")
    assert refused.status is Status.FAILED
    assert isinstance(refused.error, TemporaryFailure)
    assert refused.error.code == 421
    assert {r.status for r in results.values()} == {Status.DELIVERED}
    assert all(copies(server, rcpt) == 1 for rcpt in results)


async def test_a_reused_connection_idle_past_the_probe_time_is_probed_before_a_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server drops the idle connection when it is probed with RSET: the message goes
    on a fresh connection instead of ending UNKNOWN, and the probe is not an attempt."""
    monkeypatch.setattr(_window, "PROBE_AFTER", 0.0)
    async with CaptureServer(chunking=True) as server:
        async with mailer_for(server, max_connections=1, retry=ONE_ATTEMPT) as mailer:
            first = await mailer.send(message(0))
            server.inject(Fault.disconnect("rset", times=1))
            second = await mailer.send(message(1))
    assert (first.status, second.status) == (Status.DELIVERED, Status.DELIVERED)
    assert second.attempts == 1
    assert len(server.messages) == 2
    assert server.connections_opened == 2
    assert server.sessions[0].commands[-1] == "RSET"


async def test_a_connection_used_just_now_is_not_probed() -> None:
    async with CaptureServer(chunking=True) as server:
        async with mailer_for(server, max_connections=1) as mailer:
            for i in range(3):
                assert (await mailer.send(message(i))).ok
    assert "RSET" not in _commands(server)


async def test_chunking_false_keeps_to_data() -> None:
    async with CaptureServer(chunking=True) as server:
        async with mailer_for(server, chunking=False) as mailer:
            result = await mailer.send(message())
    assert result.status is Status.DELIVERED
    assert "DATA" in _commands(server)
    assert not any(c.startswith("BDAT") for c in _commands(server))
    assert server.messages[0].chunks == ()


async def test_chunking_no_in_the_url_keeps_to_data() -> None:
    async with CaptureServer(chunking=True) as server:
        url = server.url + ("&" if "?" in server.url else "?") + "chunking=no"
        async with Mailer(url, retry=ONE_ATTEMPT) as mailer:
            result = await mailer.send(message())
    assert result.status is Status.DELIVERED
    assert not any(c.startswith("BDAT") for c in _commands(server))


async def test_without_pipelining_bdat_is_not_used() -> None:
    async with CaptureServer(chunking=True) as server:
        async with mailer_for(server, pipelining=False) as mailer:
            result = await mailer.send(message())
    assert result.status is Status.DELIVERED
    assert server.messages[0].chunks == ()


def test_the_url_switch_is_parsed_and_checked() -> None:
    assert Server.from_url("smtp://127.0.0.1:25?chunking=no").chunking is False
    assert Server.from_url("smtp://127.0.0.1:25?chunking=yes").chunking is True
    assert Server.from_url("smtp://127.0.0.1:25").chunking is True
    with pytest.raises(ConfigError, match="chunking"):
        Server.from_url("smtp://127.0.0.1:25?chunking=maybe")


@pytest.mark.parametrize("window", [0, -1, 1001, 2.5])
def test_a_bad_window_is_a_config_error(window: object) -> None:
    with pytest.raises(ConfigError, match="chunking_window"):
        Mailer("smtp://127.0.0.1:25", chunking_window=window)  # type: ignore[arg-type]


async def test_a_rate_limit_holds_the_window_and_every_message_still_goes_once() -> None:
    async with CaptureServer(chunking=True) as server:
        async with mailer_for(server, max_connections=1, rate_limit="200/s") as mailer:
            results = await _send_all(mailer, 12)
    assert {r.status for r in results.values()} == {Status.DELIVERED}
    assert all(copies(server, rcpt) == 1 for rcpt in results)
    assert all(m.chunks for m in server.messages)


async def test_a_failing_write_ahead_hook_fails_its_message_and_the_window_goes_on() -> None:
    def before_send(m: Message) -> None:
        if "user3@example.net" in m.recipients:
            raise RuntimeError("journal is full")

    async with CaptureServer(chunking=True) as server:
        async with mailer_for(server, max_connections=1) as mailer:
            stream = mailer.send_many((message(i) for i in range(8)), before_send=before_send)
            results = _by_recipient([r async for r in stream])
    failed = results.pop("user3@example.net")
    assert failed.status is Status.FAILED
    assert "journal is full" in str(failed.error)
    assert copies(server, "user3@example.net") == 0
    assert {r.status for r in results.values()} == {Status.DELIVERED}
    assert all(copies(server, rcpt) == 1 for rcpt in results)
    assert server.connections_opened == 1
