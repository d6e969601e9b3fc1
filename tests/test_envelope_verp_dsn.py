"""The envelope sender, VERP and DSN end to end, against a real capture server."""

from __future__ import annotations

import email.message
import logging
from pathlib import Path

import anyio
import pytest

from asyncmail import (
    DSN,
    Message,
    MessageError,
    NotSupportedError,
    Outbox,
    OutboxState,
    Phase,
    Rejected,
    Status,
)
from asyncmail.message._dsn import utf8_addr_xtext_decode, xtext_decode
from asyncmail.message._verp import decode
from asyncmail.testing import CaptureServer, Fault
from asyncmail.testing._dsnparams import DSNError, split_dsn

from ._support import mailer_for, message
from .test_outbox import _wait_final

TEMPLATE = "bounces+{local}={domain}@example.com"
#: A VERP round by DATA and by BDAT windows (the capture server offering CHUNKING).
_BOTH_PATHS = pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
RECIPIENTS = ["alice@example.org", "bob+news@example.net", "carol=x@example.com"]


def _verp(**overrides: object) -> Message:
    fields: dict[str, object] = {
        "sender": "Shop <shop@example.com>",
        "to": RECIPIENTS,
        "subject": "Your order",
        "text": "Hello",
        "return_path": TEMPLATE,
    }
    fields.update(overrides)
    return Message(**fields)  # type: ignore[arg-type]


def _mail_commands(server: CaptureServer) -> list[str]:
    return [c for s in server.sessions for c in s.commands if c.startswith("MAIL")]


# -- the envelope sender -------------------------------------------------------------------


async def test_a_return_path_is_the_envelope_sender_and_from_stays_the_header() -> None:
    async with CaptureServer() as server, mailer_for(server) as mailer:
        await mailer.send(message(1, return_path="bounces@example.com"))
        [captured] = server.messages
    assert captured.envelope_sender == "bounces@example.com"
    assert "shop@example.com" in str(captured.parsed["From"])
    assert captured.parsed["Return-Path"] is None  # the receiving MTA adds it, never we


async def test_an_empty_return_path_is_the_null_sender() -> None:
    async with CaptureServer() as server, mailer_for(server) as mailer:
        await mailer.send(message(1, return_path=""))
    [mail] = _mail_commands(server)
    assert mail.startswith("MAIL FROM:<> ")


# -- DSN -------------------------------------------------------------------------------------


async def test_dsn_parameters_go_on_mail_and_on_each_rcpt_exactly() -> None:
    dsn = DSN(notify=("failure", "delay"), ret="headers", envid="order-42")
    msg = message(1, to=["a+b=c@example.org", "plain@example.org"], dsn=dsn)
    async with CaptureServer(dsn=True) as server, mailer_for(server) as mailer:
        await mailer.send(msg)
        [captured] = server.messages
    assert captured.mail_options[-2:] == ("RET=HDRS", "ENVID=order-42")
    assert captured.recipient_options == (
        ("NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;a+2Bb+3Dc@example.org"),
        ("NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;plain@example.org"),
    )
    orcpt = captured.recipient_options[0][1].partition(";")[2]
    assert xtext_decode(orcpt) == "a+b=c@example.org"


async def test_a_unicode_recipient_is_named_in_utf8_form_on_an_smtputf8_transaction() -> None:
    msg = message(1, to="josé@bücher.de", dsn=DSN())
    async with CaptureServer(dsn=True) as server, mailer_for(server) as mailer:
        await mailer.send(msg)
        [captured] = server.messages
    assert "SMTPUTF8" in captured.mail_options
    notify, orcpt = captured.recipient_options[0]
    assert notify == "NOTIFY=FAILURE"
    kind, _, value = orcpt.removeprefix("ORCPT=").partition(";")
    assert kind == "utf-8"
    assert value.isascii()
    assert utf8_addr_xtext_decode(value) == "josé@bücher.de"


async def test_an_idn_recipient_without_smtputf8_is_named_in_its_ascii_form() -> None:
    msg = message(1, to="user@bücher.de", dsn=DSN())
    async with CaptureServer(dsn=True, smtputf8=False) as server, mailer_for(server) as mailer:
        await mailer.send(msg)
        [captured] = server.messages
    assert captured.recipient_options[0][1] == "ORCPT=rfc822;user@xn--bcher-kva.de"


async def test_no_dsn_parameters_go_to_a_server_that_does_not_offer_dsn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "asyncmail")
    async with CaptureServer() as server, mailer_for(server) as mailer:
        for i in range(2):
            await mailer.send(message(i, dsn=DSN(ret="full", envid="x")))
    assert len(server.messages) == 2
    assert all(m.recipient_options == ((),) for m in server.messages)
    assert all("RET=FULL" not in c for c in _mail_commands(server))
    told = [r for r in caplog.records if "does not offer DSN" in r.getMessage()]
    assert len(told) == 1  # once per connection


async def test_a_required_dsn_refuses_a_server_without_it_before_any_mail_command() -> None:
    msg = message(1, to=["a@example.org", "b@example.org"], dsn=DSN(required=True))
    async with CaptureServer() as server, mailer_for(server) as mailer:
        with pytest.raises(NotSupportedError) as caught:
            await mailer.send(msg)
    error = caught.value
    assert error.phase is Phase.MAIL
    assert not error.retryable
    assert "does not offer DSN (RFC 3461)" in str(error)
    assert "required=False" in str(error)
    result = error.result
    assert result is not None
    assert result.status is Status.FAILED
    assert set(result.refused) == {"a@example.org", "b@example.org"}
    assert _mail_commands(server) == []


async def test_the_mailer_dsn_applies_to_stdlib_messages_and_to_messages_without_one() -> None:
    stdlib = email.message.EmailMessage()
    stdlib["From"] = "shop@example.com"
    stdlib["To"] = "std@example.org"
    stdlib["Subject"] = "stdlib"
    stdlib.set_content("hello")
    own = message(2, dsn=DSN(notify="never"))
    async with (
        CaptureServer(dsn=True) as server,
        mailer_for(server, dsn=DSN(notify="success", orcpt=False)) as mailer,
    ):
        await mailer.send(stdlib)
        await mailer.send(message(1))
        await mailer.send(own)
        first, second, third = server.messages
    assert first.recipient_options == (("NOTIFY=SUCCESS",),)
    assert second.recipient_options == (("NOTIFY=SUCCESS",),)
    assert third.recipient_options == (("NOTIFY=NEVER", "ORCPT=rfc822;user2@example.net"),)


async def test_dsn_parameters_keep_the_commands_pipelined_in_one_write() -> None:
    dsn = DSN(ret="headers", envid="e1")
    msg = message(1, to=["a@example.org", "b@example.org"], dsn=dsn)
    async with CaptureServer(dsn=True, record_chunks=True) as server, mailer_for(server) as m:
        await m.send(msg)
        [session] = server.sessions
    [group] = [c for c in session.chunks if c.startswith(b"MAIL FROM")]
    assert group.count(b"RCPT TO") == 2 and group.endswith(b"DATA\r\n")
    assert b"ENVID=e1" in group and group.count(b"NOTIFY=FAILURE") == 2


async def test_a_malformed_dsn_parameter_gets_501_from_the_capture_server() -> None:
    async with CaptureServer(dsn=True) as server:
        stream = await anyio.connect_tcp(server.host, server.port)
        async with stream:
            await stream.receive()
            await stream.send(b"EHLO test\r\n")
            ehlo = await stream.receive()
            await stream.send(b"MAIL FROM:<a@example.com> RET=SOME\r\n")
            reply = await stream.receive()
    assert b"250-DSN" in ehlo
    assert reply.startswith(b"501 ")


# -- VERP --------------------------------------------------------------------------------------


@_BOTH_PATHS
async def test_verp_sends_one_transaction_per_recipient_each_from_its_own_address(
    chunking: bool,
) -> None:
    async with CaptureServer(chunking=chunking) as server, mailer_for(server) as mailer:
        result = await mailer.send(_verp())
        captured = server.messages
    assert result.status is Status.DELIVERED
    assert result.accepted == tuple(RECIPIENTS)
    assert result.attempts == 1  # one round: each recipient tried once
    assert len(captured) == 3
    for one in captured:
        [recipient] = one.recipients
        assert decode(TEMPLATE, one.envelope_sender) == recipient
    assert len({one.data for one in captured}) == 1  # the same bytes for each
    assert all(bool(one.chunks) is chunking for one in captured)  # (BDAT when offered)


async def test_verp_transactions_run_on_one_connection_in_turn() -> None:
    async with CaptureServer() as server, mailer_for(server) as mailer:
        await mailer.send(_verp())
    [session] = server.sessions
    assert [c.split()[0] for c in session.commands[1:-1]] == ["MAIL", "RCPT", "DATA"] * 3


@_BOTH_PATHS
async def test_a_verp_recipient_refused_is_listed_and_the_message_is_delivered(
    chunking: bool,
) -> None:
    faults = [Fault.reply("rcpt", 550, "5.1.1 No such user", match="bob+news@")]
    async with (
        CaptureServer(faults=faults, chunking=chunking) as server,
        mailer_for(server) as mailer,
    ):
        result = await mailer.send(_verp())
    assert result.status is Status.DELIVERED
    assert result.accepted == ("alice@example.org", "carol=x@example.com")
    assert list(result.refused) == ["bob+news@example.net"]
    assert result.refused["bob+news@example.net"].code == 550
    assert sorted(r for m in server.messages for r in m.recipients) == [
        "alice@example.org",
        "carol=x@example.com",
    ]


@_BOTH_PATHS
async def test_a_verp_recipient_deferred_is_retried_alone(chunking: bool) -> None:
    faults = [Fault.reply("rcpt", 451, "4.7.1 Try later", match="bob+news@", times=1)]
    async with (
        CaptureServer(faults=faults, chunking=chunking) as server,
        mailer_for(server) as mailer,
    ):
        result = await mailer.send(_verp())
        rcpts = [c for s in server.sessions for c in s.commands if c.startswith("RCPT")]
    assert result.status is Status.DELIVERED
    assert sorted(result.accepted) == sorted(RECIPIENTS)
    assert result.refused == {}
    assert result.attempts == 2  # bob was tried twice, the others once
    assert [r.split(":")[1] for r in rcpts] == [
        "<alice@example.org>",
        "<bob+news@example.net>",
        "<carol=x@example.com>",
        "<bob+news@example.net>",
    ]
    assert [decode(TEMPLATE, m.envelope_sender) for m in server.messages][-1] == (
        "bob+news@example.net"
    )


async def test_a_verp_recipient_always_deferred_uses_the_retry_policy_for_itself() -> None:
    faults = [Fault.reply("rcpt", 451, "4.7.1 Try later", match="bob+news@")]
    async with CaptureServer(faults=faults) as server, mailer_for(server) as mailer:
        result = await mailer.send(_verp())
        bob = [c for s in server.sessions for c in s.commands if "bob+news@" in c]
    assert result.status is Status.DELIVERED
    assert list(result.refused) == ["bob+news@example.net"]
    assert result.refused["bob+news@example.net"].retryable
    assert len([c for c in bob if c.startswith("RCPT")]) == 3  # NO_WAIT_RETRY: 3 attempts
    assert result.attempts == 3


async def test_a_verp_round_goes_on_on_a_new_connection_after_a_421() -> None:
    faults = [Fault.reply("mail", 421, "4.3.2 Shutting down", match="bob+news=", times=1)]
    async with CaptureServer(faults=faults) as server, mailer_for(server) as mailer:
        result = await mailer.send(_verp())
    assert result.status is Status.DELIVERED
    assert sorted(result.accepted) == sorted(RECIPIENTS)
    assert len(server.sessions) == 2
    second = [c.split(":")[1] for c in server.sessions[1].commands if c.startswith("RCPT")]
    assert second == ["<carol=x@example.com>", "<bob+news@example.net>"]


async def test_a_verp_copy_lost_after_its_dot_is_unknown_and_the_others_go_on() -> None:
    faults = [Fault.disconnect("dot", times=1)]
    async with CaptureServer(faults=faults) as server, mailer_for(server) as mailer:
        result = await mailer.send(_verp())
    assert result.status is Status.DELIVERED
    assert result.unknown == ("alice@example.org",)
    assert result.accepted == ("bob+news@example.net", "carol=x@example.com")
    assert result.refused == {}
    assert len(server.messages) == 3  # the lost reply's copy was stored


async def test_a_verp_message_that_fails_for_everyone_fails() -> None:
    faults = [Fault.reply("mail", 550, "5.7.1 Sender refused")]
    async with CaptureServer(faults=faults) as server, mailer_for(server) as mailer:
        with pytest.raises(Rejected) as caught:
            await mailer.send(_verp())
    result = caught.value.result
    assert result is not None
    assert result.status is Status.FAILED
    assert set(result.refused) == set(RECIPIENTS)
    assert len(_mail_commands(server)) == 3


async def test_verp_and_dsn_together() -> None:
    msg = _verp(dsn=DSN(ret="headers", envid="spring"))
    async with CaptureServer(dsn=True) as server, mailer_for(server) as mailer:
        await mailer.send(msg)
        captured = server.messages
    assert len(captured) == 3
    for one, recipient in zip(captured, RECIPIENTS, strict=True):
        assert decode(TEMPLATE, one.envelope_sender) == recipient
        assert one.mail_options[-2:] == ("RET=HDRS", "ENVID=spring")
        [(_, orcpt)] = one.recipient_options
        assert xtext_decode(orcpt.removeprefix("ORCPT=rfc822;")) == recipient


async def test_verp_for_a_unicode_recipient_on_the_smtputf8_path() -> None:
    msg = _verp(to=["用户@例え.jp", "ascii@example.org"])
    async with CaptureServer() as server, mailer_for(server) as mailer:
        await mailer.send(msg)
        first, second = server.messages
    assert first.envelope_sender == "bounces+用户=例え.jp@example.com"
    assert "SMTPUTF8" in first.mail_options
    assert decode(TEMPLATE, first.envelope_sender) == "用户@例え.jp"
    assert decode(TEMPLATE, second.envelope_sender) == "ascii@example.org"


async def test_verp_for_an_idn_recipient_without_smtputf8_uses_the_ascii_domain() -> None:
    msg = _verp(to=["user@bücher.de"])
    async with CaptureServer(smtputf8=False) as server, mailer_for(server) as mailer:
        await mailer.send(msg)
    [captured] = server.messages
    assert captured.envelope_sender == "bounces+user=xn--bcher-kva.de@example.com"
    assert decode(TEMPLATE, captured.envelope_sender) == "user@xn--bcher-kva.de"


async def test_send_many_mixes_verp_and_plain_messages_with_pipelining() -> None:
    messages = [_verp() if i % 2 else message(i) for i in range(6)]
    async with CaptureServer() as server, mailer_for(server, max_connections=2) as mailer:
        results = [r async for r in mailer.send_many(messages, concurrency=2)]
    assert all(r.status is Status.DELIVERED for r in results)
    assert [r.attempts for r in results] == [1] * 6
    assert len(server.messages) == 3 * 3 + 3
    verp_senders = [m.envelope_sender for m in server.messages if "+" in m.envelope_sender]
    assert sorted(decode(TEMPLATE, s) or "" for s in verp_senders) == sorted(RECIPIENTS * 3)


async def test_before_send_is_called_once_for_a_verp_message() -> None:
    seen: list[object] = []
    async with CaptureServer() as server, mailer_for(server) as mailer:
        results = [r async for r in mailer.send_many([_verp()], before_send=seen.append)]
    assert results[0].ok and len(server.messages) == 3
    assert len(seen) == 1


# -- validation at construction ---------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "bounces+{local}@example.com",
        "bounces@{domain}",
        "b+{local}={local}@x.com",
        "{local}{domain}",
    ],
)
def test_a_verp_template_without_both_placeholders_in_the_local_part_is_refused(
    template: str,
) -> None:
    with pytest.raises(MessageError, match="return_path"):
        _verp(return_path=template)


def test_a_quoted_local_part_cannot_take_verp() -> None:
    with pytest.raises(MessageError, match="quoted local part"):
        _verp(to=['"john..doe"@example.org'])


def test_a_verp_address_that_would_be_too_long_is_refused_naming_the_recipient() -> None:
    long = "x" * 50 + "@" + "example.org"
    with pytest.raises(MessageError, match=f"VERP address for '{long}'"):
        _verp(to=[long])


def test_the_envelope_sender_of_a_verp_message_is_its_template() -> None:
    assert _verp().envelope_sender == TEMPLATE


# -- the outbox -------------------------------------------------------------------------------


async def test_an_outbox_delivers_a_verp_and_dsn_message_as_enqueued(tmp_path: Path) -> None:
    msg = _verp(dsn=DSN(notify=("success", "failure"), envid="o-1"))
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    async with CaptureServer(dsn=True) as server, Outbox(url) as outbox:
        await outbox.enqueue(msg, key="verp:1")
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            await _wait_final(outbox, ["verp:1"])
        status = await outbox.status("verp:1")
        captured = server.messages
    assert status is not None
    assert status.state is OutboxState.DELIVERED
    assert status.attempts == 1
    assert sorted(status.accepted) == sorted(RECIPIENTS)
    assert sorted(decode(TEMPLATE, m.envelope_sender) or "" for m in captured) == sorted(RECIPIENTS)
    assert all(m.mail_options[-1] == "ENVID=o-1" for m in captured)
    assert all(m.recipient_options[0][0] == "NOTIFY=SUCCESS,FAILURE" for m in captured)


def test_the_outbox_payload_keeps_the_verp_flag_and_the_dsn() -> None:
    from asyncmail.engine._job import Job
    from asyncmail.outbox._codec import encode, read

    msg = _verp(dsn=DSN(ret="full", envid="p"))
    job = Job.of(msg)
    content = job.content_for(smtputf8=False, eightbitmime=True)
    stored = read(encode(msg, job.envelope, content))
    assert stored.envelope == job.envelope
    assert stored.envelope.verp and stored.envelope.dsn == msg.dsn
    assert stored.message() == msg
    plain = message(1)
    job = Job.of(plain)
    payload = encode(plain, job.envelope, job.content_for(smtputf8=True, eightbitmime=True))
    assert payload.startswith(b'{"v":1,')  # an older worker still reads a plain message


@pytest.mark.parametrize(
    ("command", "arg", "kept", "dsn"),
    [
        (
            "MAIL",
            "FROM:<a@b> SIZE=10 RET=HDRS ENVID=x+2By",
            "FROM:<a@b> SIZE=10",
            ("RET=HDRS", "ENVID=x+2By"),
        ),
        ("RCPT", "TO:<a@b> NOTIFY=NEVER", "TO:<a@b>", ("NOTIFY=NEVER",)),
        ("RCPT", "TO:<a@b> ORCPT=utf-8;jos\\x{E9}@b", "TO:<a@b>", ("ORCPT=utf-8;jos\\x{E9}@b",)),
        ("RCPT", "TO:<a@b> ORCPT=utf-8;josé@b", "TO:<a@b>", ("ORCPT=utf-8;josé@b",)),
        ("MAIL", "FROM:<a@b> NOTIFY=NEVER", "FROM:<a@b> NOTIFY=NEVER", ()),
    ],
)
def test_the_capture_server_takes_dsn_parameters_off(
    command: str, arg: str, kept: str, dsn: tuple[str, ...]
) -> None:
    assert split_dsn(command, arg) == (kept, dsn)


@pytest.mark.parametrize(
    ("command", "arg"),
    [
        ("MAIL", "FROM:<a@b> RET=ALL"),
        ("MAIL", "FROM:<a@b> ENVID=a=b"),
        ("MAIL", "FROM:<a@b> ENVID=" + "x" * 101),
        ("MAIL", "FROM:<a@b> RET=FULL RET=HDRS"),
        ("RCPT", "TO:<a@b> NOTIFY=NEVER,FAILURE"),
        ("RCPT", "TO:<a@b> NOTIFY=FAILURE,FAILURE"),
        ("RCPT", "TO:<a@b> ORCPT=a@b"),
        ("RCPT", "TO:<a@b> ORCPT=rfc822;a+b"),
    ],
)
def test_the_capture_server_refuses_malformed_dsn_parameters(command: str, arg: str) -> None:
    with pytest.raises(DSNError):
        split_dsn(command, arg)


def test_a_verp_transaction_taken_back_does_not_count_a_round() -> None:
    from asyncmail.engine._job import Job

    job = Job.of(_verp())
    job.begin(0.0)
    job.unbook()  # (a stale connection: it did not happen)
    assert (job.attempts, job.tries) == (0, 0)
    job.begin(0.0)
    job.begin(0.0)
    job.unbook()
    assert (job.attempts, job.tries) == (1, 1)
