"""Every fault a relay can throw ends in exactly one visible outcome, on every SMTP path.

Each test runs once per ``send_path``: DATA with the server advertising PIPELINING (commands
grouped), DATA without it (one command per round trip), and BDAT (CHUNKING with PIPELINING: the
content goes with the envelope, a window of messages in flight). A fault at the final dot is
one at the LAST chunk's reply with BDAT. Each test asserts the outcome, how many copies the
server stored, and that there is one result per input.
"""

from __future__ import annotations

import asyncio

import pytest

from asyncmail import (
    AuthenticationError,
    Message,
    Phase,
    Rejected,
    RetryPolicy,
    ServerDisconnected,
    SMTPTimeoutError,
    Status,
    TemporaryFailure,
    TLSError,
    TLSMode,
    UnknownOutcomeError,
)
from asyncmail.smtp._bdat import CHUNK_SIZE
from asyncmail.testing import Fault
from asyncmail.testing._faults import Phase as FaultPhase

from ._support import SHORT_TIMEOUTS, SendPath, copies, first_recipient, mailer_for, message

ONE_ATTEMPT = RetryPolicy(attempts=1)


async def test_greeting_421_is_a_transient_failure_retried_then_reported(
    send_path: SendPath,
) -> None:
    fault = Fault.reply("greeting", 421, "4.3.2 Service not available")
    async with send_path.server(faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            with pytest.raises(TemporaryFailure) as caught:
                await mailer.send(message())
    error = caught.value
    assert error.code == 421
    assert error.phase is Phase.GREETING
    assert error.retryable
    assert error.result is not None
    assert error.result.status is Status.FAILED
    assert error.result.attempts == 3
    assert server.messages == []


async def test_auth_535_is_permanent_and_not_retried(send_path: SendPath) -> None:
    async with send_path.server(tls="starttls", auth={"alice": "right"}) as server:
        async with mailer_for(server, username="alice", password="wrong") as mailer:
            with pytest.raises(AuthenticationError) as caught:
                await mailer.send(message())
    assert caught.value.code == 535
    assert caught.value.phase is Phase.AUTH
    assert caught.value.result is not None
    assert caught.value.result.attempts == 1
    assert "wrong" not in str(caught.value)
    assert server.messages == []


async def test_required_starttls_missing_fails_before_mail_from(send_path: SendPath) -> None:
    async with send_path.server() as server:
        async with mailer_for(server, tls=TLSMode.STARTTLS) as mailer:
            with pytest.raises(TLSError) as caught:
                await mailer.send(message())
    assert caught.value.phase is Phase.STARTTLS
    assert not caught.value.retryable
    commands = [c for s in server.sessions for c in s.commands]
    assert not any(c.upper().startswith("MAIL") for c in commands)
    assert server.messages == []


async def test_mail_451_is_retried_and_delivered(send_path: SendPath) -> None:
    fault = Fault.reply("mail", 451, "4.3.0 Try again later", times=1)
    async with send_path.server(faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            result = await mailer.send(message())
    assert result.status is Status.DELIVERED
    assert result.attempts == 2
    assert len(server.messages) == 1


async def test_mail_550_is_permanent_and_nothing_is_stored(send_path: SendPath) -> None:
    fault = Fault.reply("mail", 550, "5.7.1 Sender rejected")
    async with send_path.server(faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            with pytest.raises(Rejected) as caught:
                await mailer.send(message())
            # the session was reset, not dropped: the next message uses the same connection
            server.clear()
    error = caught.value
    assert (error.code, error.enhanced_code, error.phase) == (550, "5.7.1", Phase.MAIL)
    assert error.result is not None
    assert error.result.attempts == 1
    assert server.messages == []
    assert server.connections_opened == 1


async def test_rcpt_partly_450_and_partly_550_retries_only_the_450(send_path: SendPath) -> None:
    faults = [
        Fault.reply("rcpt", 450, "4.2.1 Mailbox busy", match="busy@", times=1),
        Fault.reply("rcpt", 550, "5.1.1 No such user", match="nobody@"),
    ]
    recipients = ["ok@example.org", "busy@example.org", "nobody@example.org"]
    async with send_path.server(faults=faults) as server:
        async with mailer_for(server) as mailer:
            result = await mailer.send(message(to=recipients))
    assert result.status is Status.DELIVERED
    assert set(result.accepted) == {"ok@example.org", "busy@example.org"}
    assert list(result.refused) == ["nobody@example.org"]
    refusal = result.refused["nobody@example.org"]
    assert (refusal.code, refusal.recipient, refusal.retryable) == (
        550,
        "nobody@example.org",
        False,
    )
    assert result.attempts == 2
    # nobody got a second copy
    assert copies(server, "ok@example.org") == 1
    assert copies(server, "busy@example.org") == 1
    assert copies(server, "nobody@example.org") == 0
    assert len(server.messages) == 2
    assert server.connections_opened == 1  # refusals reset the session, they do not drop it


async def test_every_recipient_refused_fails_with_their_errors(send_path: SendPath) -> None:
    fault = Fault.reply("rcpt", 550, "5.1.1 No such user")
    async with send_path.server(faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            with pytest.raises(Rejected) as caught:
                await mailer.send(message(to=["a@example.org", "b@example.org"]))
            result = await mailer.send_many([message()]).__anext__()
    assert caught.value.result is not None
    assert set(caught.value.result.refused) == {"a@example.org", "b@example.org"}
    assert result.status is Status.FAILED
    assert server.messages == []


async def test_data_554_is_permanent(send_path: SendPath) -> None:
    """A 554 refusing the content; BDAT has no DATA, so there the LAST chunk's reply refuses."""
    at, phase = send_path.content_refused
    fault = Fault.reply(at, 554, "5.5.0 Transaction failed")
    async with send_path.server(faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            with pytest.raises(Rejected) as caught:
                await mailer.send(message())
    assert (caught.value.code, caught.value.phase) == (554, phase)
    assert caught.value.result is not None
    assert caught.value.result.attempts == 1
    assert server.messages == []


async def test_final_dot_451_is_retried_with_the_same_message_id(send_path: SendPath) -> None:
    fault = Fault.reply(send_path.dot, 451, "4.3.0 Queue full", times=1)
    async with send_path.server(faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            msg = message()
            result = await mailer.send(msg)
    assert result.status is Status.DELIVERED
    assert result.attempts == 2
    assert [m.parsed["Message-ID"] for m in server.messages] == [msg.message_id]


async def test_disconnect_mid_data_is_not_delivered_and_is_retried(send_path: SendPath) -> None:
    # large enough that the content cannot all have left this process when the server hangs up
    big = "x" * 78 + "\n"
    msg = message(text=big * 200_000)
    fault = Fault.disconnect_mid_data(after_bytes=10_000, times=1)
    async with send_path.server(faults=[fault]) as server:
        async with mailer_for(server, retry=ONE_ATTEMPT) as mailer:
            with pytest.raises(ServerDisconnected) as caught:
                await mailer.send(msg)
            assert caught.value.phase is Phase.DATA_TRANSFER
            assert caught.value.retryable
            assert server.messages == []
            result = await mailer.send(msg)  # the fault is used up: a retry delivers
    assert result.status is Status.DELIVERED
    assert len(server.messages) == 1


async def test_disconnect_after_the_final_dot_is_unknown_and_not_retried(
    send_path: SendPath,
) -> None:
    fault = Fault.disconnect(send_path.dot, times=1)
    async with send_path.server(faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            with pytest.raises(UnknownOutcomeError) as caught:
                await mailer.send(message())
    result = caught.value.result
    assert result is not None
    assert result.status is Status.UNKNOWN
    assert result.attempts == 1
    assert len(server.messages) == 1  # it was in fact stored: the client could not know


async def test_retry_unknown_opt_in_resends_with_the_same_message_id(send_path: SendPath) -> None:
    fault = Fault.disconnect(send_path.dot, times=1)
    retry = RetryPolicy(attempts=3, base_delay=0, retry_unknown=True)
    async with send_path.server(faults=[fault]) as server:
        async with mailer_for(server, retry=retry) as mailer:
            msg = message()
            result = await mailer.send(msg)
    assert result.status is Status.DELIVERED
    assert result.attempts == 2
    ids = [m.parsed["Message-ID"] for m in server.messages]
    assert ids == [msg.message_id, msg.message_id]  # at-least-once: duplicates recognisable


def _stall_at(send_path: SendPath, phase: str) -> tuple[FaultPhase, Phase, Status, Message, int]:
    """What a stall at ``phase`` of the DATA dialogue is on ``send_path``, and what it gives.

    Returns the fault's phase, the error's phase, the outcome, the message to send and the
    copies stored. With BDAT the content leaves with the envelope: a stall before the LAST
    chunk's reply leaves the message UNKNOWN (the server might have taken it, the client
    cannot tell), even though nothing was stored. BDAT has no DATA: its row stalls the reply
    to a chunk before the last instead, with content of more than one chunk.
    """
    stored = 1 if phase == "dot" else 0
    if phase == "dot":
        return send_path.dot, Phase.FINAL_REPLY, Status.UNKNOWN, message(), stored
    expected = {
        "greeting": Phase.GREETING,
        "ehlo": Phase.EHLO,
        "mail": Phase.MAIL,
        "rcpt": Phase.RCPT,
        "data": Phase.DATA,
    }[phase]
    if not send_path.chunking or phase in ("greeting", "ehlo"):
        return phase, expected, Status.FAILED, message(), stored  # type: ignore[return-value]
    if phase == "data":
        big = message(text=("x" * 78 + "\n") * (CHUNK_SIZE // 70))
        return "bdat", Phase.DATA_TRANSFER, Status.UNKNOWN, big, stored
    return phase, expected, Status.UNKNOWN, message(), stored  # type: ignore[return-value]


@pytest.mark.parametrize("phase", ["greeting", "ehlo", "mail", "rcpt", "data", "dot"])
async def test_a_stall_in_each_phase_times_out_and_closes_the_connection(
    send_path: SendPath, phase: str
) -> None:
    at, expected_phase, status, msg, stored = _stall_at(send_path, phase)
    fault = Fault.stall(at)
    async with send_path.server(faults=[fault]) as server:
        async with mailer_for(server, retry=ONE_ATTEMPT, timeouts=SHORT_TIMEOUTS) as mailer:
            results = [r async for r in mailer.send_many([msg])]
            stats = mailer.statistics()
    [result] = results
    assert result.status is status
    error = result.error
    if status is Status.UNKNOWN:
        assert isinstance(error, UnknownOutcomeError)
    else:
        assert isinstance(error, SMTPTimeoutError)
    assert error.phase is expected_phase
    assert stats.pool.open == 0  # a timed-out connection is never reused
    assert len(server.messages) == stored


async def test_mixed_faults_give_one_result_per_input(send_path: SendPath) -> None:
    faults = [
        Fault.reply("rcpt", 550, "5.1.1 No such user", match="user3@"),
        Fault.reply("rcpt", 450, "4.2.1 Busy", match="user5@"),
        Fault.disconnect(send_path.dot, match="Hello 7\r\n", times=1),
    ]
    async with send_path.server(faults=faults) as server:
        async with mailer_for(server, retry=RetryPolicy(attempts=2, base_delay=0)) as mailer:
            results = [r async for r in mailer.send_many(message(i) for i in range(20))]
    assert len(results) == 20
    by_to = {first_recipient(r): r for r in results}
    assert len(by_to) == 20
    assert by_to["user3@example.net"].status is Status.FAILED
    assert by_to["user5@example.net"].status is Status.FAILED
    assert by_to["user5@example.net"].attempts == 2
    assert by_to["user7@example.net"].status is Status.UNKNOWN
    delivered = [r for r in results if r.status is Status.DELIVERED]
    unknown = [r for r in results if r.status is Status.UNKNOWN]
    if not send_path.chunking:
        assert len(delivered) == 17
        assert len(server.messages) == 18  # 17 delivered + the unknown one the server did store
        return
    # BDAT: what was written behind message 7 on its connection is UNKNOWN too (the window's
    # cost, never stored: the server hung up first); every other message is delivered once
    assert len(delivered) + len(unknown) == 18
    assert all(copies(server, first_recipient(r)) == 1 for r in delivered)
    assert copies(server, "user7@example.net") == 1
    assert len(server.messages) == len(delivered) + 1


async def test_a_drop_after_the_dot_on_one_connection_leaves_only_what_was_in_flight_unknown(
    send_path: SendPath,
) -> None:
    """With BDAT, the messages written behind the dropped one are UNKNOWN too: the window's cost.

    Their LAST chunk had left, so the client cannot tell they were not stored (they were not:
    the server hung up first). How many had left when the server hung up depends on timing,
    up to the window's size; the messages not yet written go on a new connection.
    """
    fault = Fault.disconnect(send_path.dot, match="Hello 7\r\n", times=1)
    async with send_path.server(faults=[fault]) as server:
        async with mailer_for(server, max_connections=1, chunking_window=4) as mailer:
            results = [r async for r in mailer.send_many(message(i) for i in range(20))]
    assert len(results) == 20
    unknown = sorted(int(first_recipient(r)[4:-12]) for r in results if r.status is Status.UNKNOWN)
    in_flight = 4 if send_path.chunking else 1
    assert unknown == list(range(7, 7 + len(unknown)))
    assert 1 <= len(unknown) <= in_flight
    for result in results:
        to = first_recipient(result)
        if result.status is Status.DELIVERED:
            assert copies(server, to) == 1
        else:
            assert result.status is Status.UNKNOWN
            assert result.attempts == 1
            assert copies(server, to) == (1 if to == "user7@example.net" else 0)
    assert server.connections_opened == 2


async def test_cancelled_send_never_returns_its_connection_to_the_pool(send_path: SendPath) -> None:
    fault = Fault.stall(send_path.dot, times=1)
    async with send_path.server(faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            task = asyncio.create_task(mailer.send(message()))
            await server.wait_for_messages(1)  # the content is in: the reply is what stalls
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            stats = mailer.statistics()
            assert stats.pool.open == 0
            assert stats.in_flight == 0
            result = await mailer.send(message(1))
    assert result.status is Status.DELIVERED
    assert server.connections_opened == 2


# -- faults only BDAT has: a chunk before the last, refusals inside a window -------------------

CHUNKING = SendPath("chunking", pipelining=True, chunking=True)


def two_chunks(i: int = 0) -> Message:
    """A message whose content goes in two BDAT chunks."""
    return message(i, text=("x" * 78 + "\n") * (CHUNK_SIZE // 70))


async def test_a_chunk_before_the_last_refused_with_554_fails_in_data_transfer() -> None:
    fault = Fault.reply("bdat", 554, "5.6.0 Content refused", times=1)
    async with CHUNKING.server(faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            with pytest.raises(Rejected) as caught:
                await mailer.send(two_chunks())
            result = await mailer.send(message(1))  # the session was reset, not dropped
    assert (caught.value.code, caught.value.phase) == (554, Phase.DATA_TRANSFER)
    assert caught.value.result is not None
    assert caught.value.result.attempts == 1
    assert result.status is Status.DELIVERED
    assert [m.recipients for m in server.messages] == [("user1@example.net",)]
    assert server.connections_opened == 1


async def test_a_chunk_before_the_last_refused_with_451_is_retried_and_delivered_once() -> None:
    fault = Fault.reply("bdat", 451, "4.3.0 Try again", times=1)
    async with CHUNKING.server(faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            result = await mailer.send(two_chunks())
    assert result.status is Status.DELIVERED
    assert result.attempts == 2
    [stored] = server.messages
    assert len(stored.chunks) == 2


async def test_refusals_inside_a_window_touch_only_their_own_messages() -> None:
    faults = [
        Fault.reply("rcpt", 550, "5.1.1 No such user", match="user3@"),
        Fault.reply("bdat_last", 554, "5.6.0 Content refused", match="Hello 5\r\n"),
        Fault.reply("bdat_last", 451, "4.3.0 Queue full", match="Hello 9\r\n", times=1),
    ]
    async with CHUNKING.server(faults=faults) as server:
        async with mailer_for(server, max_connections=1) as mailer:
            results = [r async for r in mailer.send_many(message(i) for i in range(20))]
    by_to = {first_recipient(r): r for r in results}
    assert len(by_to) == 20
    user3, user5, user9 = (by_to.pop(f"user{i}@example.net") for i in (3, 5, 9))
    for refused, phase in ((user3, Phase.RCPT), (user5, Phase.FINAL_REPLY)):
        assert refused.status is Status.FAILED
        assert isinstance(refused.error, Rejected)
        assert refused.error.phase is phase
    assert (user9.status, user9.attempts) == (Status.DELIVERED, 2)
    assert all(r.status is Status.DELIVERED and r.attempts == 1 for r in by_to.values())
    assert copies(server, "user3@example.net") == copies(server, "user5@example.net") == 0
    assert all(copies(server, to) == 1 for to in [*by_to, "user9@example.net"])
    assert server.connections_opened == 1  # refusals reset the session, they do not drop it


async def test_a_421_to_a_last_chunk_in_a_window_retries_it_and_those_behind_it_once() -> None:
    """The server closes after a 421: what was written behind it was never read, not tried."""
    fault = Fault.reply("bdat_last", 421, match="Hello 4\r\n", times=1)
    async with CHUNKING.server(faults=[fault]) as server:
        async with mailer_for(server, max_connections=1) as mailer:
            results = [r async for r in mailer.send_many(message(i) for i in range(20))]
    by_to = {first_recipient(r): r for r in results}
    assert len(by_to) == 20
    assert all(r.status is Status.DELIVERED for r in results), [r.error for r in results]
    assert by_to["user4@example.net"].attempts == 2
    assert all(r.attempts == 1 for to, r in by_to.items() if to != "user4@example.net")
    assert all(copies(server, to) == 1 for to in by_to)
    assert server.connections_opened == 2
