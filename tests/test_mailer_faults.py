"""Every fault a relay can throw ends in exactly one visible outcome, on both SMTP paths.

Each test runs twice: with the server advertising PIPELINING (commands grouped) and
without it (one command per round trip). Each asserts the outcome, how many copies the
server stored, and that there is one result per input.
"""

from __future__ import annotations

import asyncio

import pytest

from asyncmail import (
    AuthenticationError,
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
from asyncmail.testing import CaptureServer, Fault

from ._support import SHORT_TIMEOUTS, copies, first_recipient, mailer_for, message

pytestmark = pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "plain"])

ONE_ATTEMPT = RetryPolicy(attempts=1)


async def test_greeting_421_is_a_transient_failure_retried_then_reported(pipelining: bool) -> None:
    fault = Fault.reply("greeting", 421, "4.3.2 Service not available")
    async with CaptureServer(pipelining=pipelining, faults=[fault]) as server:
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


async def test_auth_535_is_permanent_and_not_retried(pipelining: bool) -> None:
    async with CaptureServer(
        pipelining=pipelining, tls="starttls", auth={"alice": "right"}
    ) as server:
        async with mailer_for(server, username="alice", password="wrong") as mailer:
            with pytest.raises(AuthenticationError) as caught:
                await mailer.send(message())
    assert caught.value.code == 535
    assert caught.value.phase is Phase.AUTH
    assert caught.value.result is not None
    assert caught.value.result.attempts == 1
    assert "wrong" not in str(caught.value)
    assert server.messages == []


async def test_required_starttls_missing_fails_before_mail_from(pipelining: bool) -> None:
    async with CaptureServer(pipelining=pipelining) as server:
        async with mailer_for(server, tls=TLSMode.STARTTLS) as mailer:
            with pytest.raises(TLSError) as caught:
                await mailer.send(message())
    assert caught.value.phase is Phase.STARTTLS
    assert not caught.value.retryable
    commands = [c for s in server.sessions for c in s.commands]
    assert not any(c.upper().startswith("MAIL") for c in commands)
    assert server.messages == []


async def test_mail_451_is_retried_and_delivered(pipelining: bool) -> None:
    fault = Fault.reply("mail", 451, "4.3.0 Try again later", times=1)
    async with CaptureServer(pipelining=pipelining, faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            result = await mailer.send(message())
    assert result.status is Status.DELIVERED
    assert result.attempts == 2
    assert len(server.messages) == 1


async def test_mail_550_is_permanent_and_nothing_is_stored(pipelining: bool) -> None:
    fault = Fault.reply("mail", 550, "5.7.1 Sender rejected")
    async with CaptureServer(pipelining=pipelining, faults=[fault]) as server:
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


async def test_rcpt_partly_450_and_partly_550_retries_only_the_450(pipelining: bool) -> None:
    faults = [
        Fault.reply("rcpt", 450, "4.2.1 Mailbox busy", match="busy@", times=1),
        Fault.reply("rcpt", 550, "5.1.1 No such user", match="nobody@"),
    ]
    recipients = ["ok@example.org", "busy@example.org", "nobody@example.org"]
    async with CaptureServer(pipelining=pipelining, faults=faults) as server:
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


async def test_every_recipient_refused_fails_with_their_errors(pipelining: bool) -> None:
    fault = Fault.reply("rcpt", 550, "5.1.1 No such user")
    async with CaptureServer(pipelining=pipelining, faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            with pytest.raises(Rejected) as caught:
                await mailer.send(message(to=["a@example.org", "b@example.org"]))
            result = await mailer.send_many([message()]).__anext__()
    assert caught.value.result is not None
    assert set(caught.value.result.refused) == {"a@example.org", "b@example.org"}
    assert result.status is Status.FAILED
    assert server.messages == []


async def test_data_554_is_permanent(pipelining: bool) -> None:
    fault = Fault.reply("data", 554, "5.5.0 Transaction failed")
    async with CaptureServer(pipelining=pipelining, faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            with pytest.raises(Rejected) as caught:
                await mailer.send(message())
    assert (caught.value.code, caught.value.phase) == (554, Phase.DATA)
    assert caught.value.result is not None
    assert caught.value.result.attempts == 1
    assert server.messages == []


async def test_final_dot_451_is_retried_with_the_same_message_id(pipelining: bool) -> None:
    fault = Fault.reply("dot", 451, "4.3.0 Queue full", times=1)
    async with CaptureServer(pipelining=pipelining, faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            msg = message()
            result = await mailer.send(msg)
    assert result.status is Status.DELIVERED
    assert result.attempts == 2
    assert [m.parsed["Message-ID"] for m in server.messages] == [msg.message_id]


async def test_disconnect_mid_data_is_not_delivered_and_is_retried(pipelining: bool) -> None:
    # large enough that the content cannot all have left this process when the server hangs up
    big = "x" * 78 + "\n"
    msg = message(text=big * 200_000)
    fault = Fault.disconnect_mid_data(after_bytes=10_000, times=1)
    async with CaptureServer(pipelining=pipelining, faults=[fault]) as server:
        async with mailer_for(server, retry=ONE_ATTEMPT) as mailer:
            with pytest.raises(ServerDisconnected) as caught:
                await mailer.send(msg)
            assert caught.value.phase is Phase.DATA_TRANSFER
            assert caught.value.retryable
            assert server.messages == []
            result = await mailer.send(msg)  # the fault is used up: a retry delivers
    assert result.status is Status.DELIVERED
    assert len(server.messages) == 1


async def test_disconnect_after_the_final_dot_is_unknown_and_not_retried(pipelining: bool) -> None:
    fault = Fault.disconnect("dot", times=1)
    async with CaptureServer(pipelining=pipelining, faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            with pytest.raises(UnknownOutcomeError) as caught:
                await mailer.send(message())
    result = caught.value.result
    assert result is not None
    assert result.status is Status.UNKNOWN
    assert result.attempts == 1
    assert len(server.messages) == 1  # it was in fact stored: the client could not know


async def test_retry_unknown_opt_in_resends_with_the_same_message_id(pipelining: bool) -> None:
    fault = Fault.disconnect("dot", times=1)
    retry = RetryPolicy(attempts=3, base_delay=0, retry_unknown=True)
    async with CaptureServer(pipelining=pipelining, faults=[fault]) as server:
        async with mailer_for(server, retry=retry) as mailer:
            msg = message()
            result = await mailer.send(msg)
    assert result.status is Status.DELIVERED
    assert result.attempts == 2
    ids = [m.parsed["Message-ID"] for m in server.messages]
    assert ids == [msg.message_id, msg.message_id]  # at-least-once: duplicates recognisable


@pytest.mark.parametrize(
    ("phase", "expected_phase", "status"),
    [
        ("greeting", Phase.GREETING, Status.FAILED),
        ("ehlo", Phase.EHLO, Status.FAILED),
        ("mail", Phase.MAIL, Status.FAILED),
        ("rcpt", Phase.RCPT, Status.FAILED),
        ("data", Phase.DATA, Status.FAILED),
        ("dot", Phase.FINAL_REPLY, Status.UNKNOWN),
    ],
)
async def test_a_stall_in_each_phase_times_out_and_closes_the_connection(
    pipelining: bool, phase: str, expected_phase: Phase, status: Status
) -> None:
    fault = Fault.stall(phase)  # type: ignore[arg-type]
    async with CaptureServer(pipelining=pipelining, faults=[fault]) as server:
        async with mailer_for(server, retry=ONE_ATTEMPT, timeouts=SHORT_TIMEOUTS) as mailer:
            results = [r async for r in mailer.send_many([message()])]
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
    assert len(server.messages) == (1 if phase == "dot" else 0)


async def test_mixed_faults_give_one_result_per_input(pipelining: bool) -> None:
    faults = [
        Fault.reply("rcpt", 550, "5.1.1 No such user", match="user3@"),
        Fault.reply("rcpt", 450, "4.2.1 Busy", match="user5@"),
        Fault.disconnect("dot", match="Hello 7\r\n", times=1),
    ]
    async with CaptureServer(pipelining=pipelining, faults=faults) as server:
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
    assert len(delivered) == 17
    assert len(server.messages) == 18  # 17 delivered + the unknown one the server did store


async def test_cancelled_send_never_returns_its_connection_to_the_pool(pipelining: bool) -> None:
    fault = Fault.stall("dot", times=1)
    async with CaptureServer(pipelining=pipelining, faults=[fault]) as server:
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
