"""asyncmail.testing: the capture server speaks real SMTP, records it, and injects faults."""

from __future__ import annotations

import asyncio
import contextlib
import re
import smtplib
import ssl
import subprocess
import sys
import threading
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

import asyncmail.testing
from asyncmail.testing import CaptureServer, Fault

pytest_plugins = ["pytester"]

SENDER = "alice@example.com"
RCPT = "bob@example.com"


def make_message(subject: str = "Hello") -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = RCPT
    message["Subject"] = subject
    message.set_content("Hi Bob,\n.leading dot stays\n")
    return message


@asynccontextmanager
async def raw_connection(
    server: CaptureServer,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):  # the server may have reset the connection
            await writer.wait_closed()


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """One whole (possibly multi-line) reply."""
    lines = []
    while True:
        line = await reader.readline()
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return b"".join(lines)


async def client(server: CaptureServer, **kwargs: object) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=5, **kwargs)  # type: ignore[arg-type]
    await smtp.connect()
    await smtp.ehlo()  # aiosmtplib does not (re-)EHLO after implicit TLS or STARTTLS
    return smtp


# --- capture -------------------------------------------------------------------------------


async def test_message_is_captured_with_envelope_and_unstuffed_data() -> None:
    async with CaptureServer() as server:
        await aiosmtplib.send(make_message(), hostname=server.host, port=server.port)
        [captured] = await server.wait_for_messages(1)
    assert captured.envelope_sender == SENDER
    assert captured.recipients == (RCPT,)
    assert b"\r\n.leading dot stays\r\n" in captured.data
    assert captured.parsed["Subject"] == "Hello"
    assert not captured.tls
    assert captured.authenticated_as is None
    assert captured.session_id == server.sessions[0].id == 0
    assert server.sessions[0].closed
    assert server.connections_opened == 1


async def test_url_host_and_port_describe_each_tls_mode() -> None:
    for tls, url in [
        ("none", "smtp://127.0.0.1:{}?tls=none"),
        ("starttls", "smtp://127.0.0.1:{}"),
        ("implicit", "smtps://127.0.0.1:{}"),
    ]:
        async with CaptureServer(tls=tls) as server:  # type: ignore[arg-type]
            assert server.host == "127.0.0.1"
            assert server.port > 0
            assert server.url == url.format(server.port)


async def test_server_cannot_be_started_twice() -> None:
    server = CaptureServer()
    async with server:
        pass
    with pytest.raises(RuntimeError, match="cannot be started twice"):
        await server.__aenter__()


async def test_clear_empties_messages_and_sessions_in_place() -> None:
    async with CaptureServer() as server:
        outbox = server.messages
        await aiosmtplib.send(make_message(), hostname=server.host, port=server.port)
        server.clear()
        assert outbox == []
        assert server.sessions == []


async def test_smtputf8_addresses_are_accepted() -> None:
    async with CaptureServer() as server:
        await aiosmtplib.send(
            make_message(),
            sender="jörg@exämple.com",
            recipients=["zoë@exämple.com"],
            hostname=server.host,
            port=server.port,
        )
        [captured] = await server.wait_for_messages(1)
    assert captured.envelope_sender == "jörg@exämple.com"
    assert "SMTPUTF8" in captured.mail_options


async def test_max_concurrent_connections_is_the_high_water_mark() -> None:
    async with CaptureServer() as server:
        clients = [await client(server) for _ in range(3)]
        await server.drop_connections()  # returns once the server has seen all three go
        for smtp in clients:
            smtp.close()
        await client(server)  # a 4th, alone
        assert server.connections_opened == 4
        assert server.max_concurrent_connections == 3
        await server.drop_connections()


# --- TLS ------------------------------------------------------------------------------------


async def test_starttls_verifies_against_the_trustme_ca_with_hostname_check() -> None:
    async with CaptureServer(tls="starttls") as server:
        context = server.client_ssl_context()
        assert context.check_hostname
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert server.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
        await aiosmtplib.send(
            make_message(),
            hostname=server.host,
            port=server.port,
            start_tls=True,
            tls_context=context,
        )
        [captured] = await server.wait_for_messages(1)
        ca_file = server.ca_file
    assert captured.tls
    assert server.sessions[0].tls
    assert not ca_file.exists()


async def test_implicit_tls_verifies_against_the_ca_file() -> None:
    async with CaptureServer(tls="implicit") as server:
        context = ssl.create_default_context(cafile=str(server.ca_file))
        await aiosmtplib.send(
            make_message(),
            hostname="localhost",
            port=server.port,
            use_tls=True,
            tls_context=context,
        )
        [captured] = await server.wait_for_messages(1)
    assert captured.tls


async def test_tls_with_an_untrusted_ca_fails_verification() -> None:
    async with CaptureServer(tls="implicit") as server:
        with pytest.raises(aiosmtplib.SMTPConnectError):
            await client(server, use_tls=True, tls_context=ssl.create_default_context())


async def test_require_starttls_refuses_mail_before_starttls() -> None:
    async with CaptureServer(tls="starttls", require_starttls=True) as server:
        smtp = await client(server, start_tls=False)
        response = await smtp.execute_command(b"MAIL", b"FROM:<a@example.com>")
        assert response.code == 530
        await smtp.starttls(tls_context=server.client_ssl_context())
        await smtp.sendmail(SENDER, [RCPT], make_message().as_bytes())
        await smtp.quit()


# --- AUTH -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["auth_plain", "auth_login", "auth_crammd5"])
async def test_auth_mechanism_succeeds_and_is_recorded(method: str) -> None:
    async with CaptureServer(tls="starttls", auth={"user": "s3cret"}) as server:
        smtp = await client(server, start_tls=True, tls_context=server.client_ssl_context())
        await getattr(smtp, method)("user", "s3cret")
        await smtp.sendmail(SENDER, [RCPT], make_message().as_bytes())
        await smtp.quit()
        [captured] = await server.wait_for_messages(1)
    assert captured.authenticated_as == "user"
    assert server.sessions[0].authenticated_as == "user"
    assert all("s3cret" not in command for command in server.sessions[0].commands)


@pytest.mark.parametrize("method", ["auth_plain", "auth_login", "auth_crammd5"])
async def test_wrong_password_gets_535(method: str) -> None:
    async with CaptureServer(tls="implicit", auth={"user": "s3cret"}) as server:
        smtp = await client(server, use_tls=True, tls_context=server.client_ssl_context())
        assert set(smtp.server_auth_methods) >= {"plain", "login", "cram-md5"}
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
            await getattr(smtp, method)("user", "wrong")
        assert caught.value.code == 535
        await smtp.quit()


async def test_xoauth2_accepts_the_token_and_refuses_others_like_gmail() -> None:
    async with CaptureServer(
        tls="implicit", xoauth2_tokens={"user@example.com": "tok"}, require_auth=True
    ) as server:
        smtp = await client(server, use_tls=True, tls_context=server.client_ssl_context())
        assert smtp.server_auth_methods == ["xoauth2"]
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
            await smtp.auth_xoauth2("user@example.com", "expired")
        assert caught.value.code == 535
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await smtp.sendmail(SENDER, [RCPT], b"Subject: x\r\n\r\nx\r\n")
        assert refused.value.code == 530
        await smtp.auth_xoauth2("user@example.com", "tok")
        await smtp.sendmail(SENDER, [RCPT], b"Subject: x\r\n\r\nx\r\n")
        await smtp.quit()
    assert server.messages[0].authenticated_as == "user@example.com"


async def test_auth_is_neither_offered_nor_accepted_in_plaintext_when_tls_required() -> None:
    async with CaptureServer(auth={"user": "pw"}) as server:
        async with raw_connection(server) as (reader, writer):
            await read_reply(reader)
            writer.write(b"EHLO me\r\n")
            assert b"AUTH" not in await read_reply(reader)
            writer.write(b"AUTH PLAIN AHVzZXIAcHc=\r\n")
            assert (await read_reply(reader)).startswith(b"538 ")


async def test_auth_in_plaintext_works_when_allowed() -> None:
    async with CaptureServer(auth={"user": "pw"}, auth_require_tls=False) as server:
        smtp = await client(server)
        await smtp.login("user", "pw")
        await smtp.quit()
    assert server.sessions[0].authenticated_as == "user"


async def test_auth_not_configured_is_not_offered() -> None:
    async with CaptureServer(tls="implicit") as server:
        smtp = await client(server, use_tls=True, tls_context=server.client_ssl_context())
        assert not smtp.supports_extension("auth")
        response = await smtp.execute_command(b"AUTH", b"PLAIN", b"AHVzZXIAcHc=")
        assert response.code == 502
        await smtp.quit()


# --- PIPELINING and raw chunks -----------------------------------------------------------


async def test_pipelining_is_advertised_unless_disabled() -> None:
    async with CaptureServer() as server:
        smtp = await client(server)
        assert smtp.supports_extension("pipelining")
        await smtp.quit()
    async with CaptureServer(pipelining=False) as server:
        smtp = await client(server)
        assert not smtp.supports_extension("pipelining")
        await smtp.quit()


async def test_pipelined_group_arrives_as_one_chunk_and_gets_three_replies() -> None:
    group = b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
    async with CaptureServer(record_chunks=True) as server:
        async with raw_connection(server) as (reader, writer):
            await read_reply(reader)
            writer.write(b"EHLO me\r\n")
            await read_reply(reader)
            writer.write(group)
            replies = [await read_reply(reader) for _ in range(3)]
            assert [reply[:3] for reply in replies] == [b"250", b"250", b"354"]
            writer.write(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
            assert (await read_reply(reader))[:3] == b"250"
            assert (await read_reply(reader))[:3] == b"221"
        [captured] = await server.wait_for_messages(1)
        session = server.sessions[0]
    assert group in session.chunks
    assert captured.data == b"Subject: x\r\n\r\nbody\r\n"
    assert session.commands == (
        "EHLO me",
        "MAIL FROM:<a@example.com>",
        "RCPT TO:<b@example.com>",
        "DATA",
        "QUIT",
    )


# --- faults -------------------------------------------------------------------------------


async def test_421_greeting_replies_then_closes() -> None:
    async with CaptureServer(faults=[Fault.reply("greeting", 421)]) as server:
        async with raw_connection(server) as (reader, _writer):
            assert (await read_reply(reader)).startswith(b"421 4.3.2 ")
            assert await reader.read() == b""


async def test_554_greeting_refuses_everything_but_quit() -> None:
    async with CaptureServer(faults=[Fault.reply("greeting", 554, "5.7.1 Go away")]) as server:
        async with raw_connection(server) as (reader, writer):
            assert await read_reply(reader) == b"554 5.7.1 Go away\r\n"
            writer.write(b"EHLO me\r\n")
            assert (await read_reply(reader)).startswith(b"503 ")
            writer.write(b"QUIT\r\n")
            assert (await read_reply(reader)).startswith(b"221 ")
            assert await reader.read() == b""


async def test_rcpt_faults_apply_only_to_matching_recipients() -> None:
    faults = [
        Fault.reply("rcpt", 450, "4.2.1 Busy", match="busy@"),
        Fault.reply("rcpt", 550, "5.1.1 No such user", match="NOBODY@example.com"),
    ]
    async with CaptureServer(faults=faults) as server:
        smtp = await client(server)
        errors, _ = await smtp.sendmail(
            SENDER, ["busy@example.com", "nobody@example.com", RCPT], b"Subject: x\r\n\r\nx\r\n"
        )
        await smtp.quit()
    assert {rcpt: error.code for rcpt, error in errors.items()} == {
        "busy@example.com": 450,
        "nobody@example.com": 550,
    }
    assert server.messages[0].recipients == (RCPT,)


async def test_times_limits_a_fault_to_its_first_matches() -> None:
    async with CaptureServer(faults=[Fault.reply("mail", 451, times=1)]) as server:
        smtp = await client(server)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
            await smtp.sendmail(SENDER, [RCPT], b"Subject: x\r\n\r\nx\r\n")
        assert caught.value.code == 451
        await smtp.rset()
        await smtp.sendmail(SENDER, [RCPT], b"Subject: x\r\n\r\nx\r\n")
        await smtp.quit()
    assert len(server.messages) == 1


async def test_multiline_reply_fault_on_data_command() -> None:
    fault = Fault.reply("data", 554, "5.7.1 Rejected\n5.7.1 See policy")
    async with CaptureServer(faults=[fault]) as server:
        smtp = await client(server)
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await smtp.sendmail(SENDER, [RCPT], b"Subject: x\r\n\r\nx\r\n")
        assert caught.value.code == 554
        assert caught.value.message == "5.7.1 Rejected\n5.7.1 See policy"
        await smtp.quit()
    assert server.messages == []


async def test_dot_error_reply_does_not_store_the_message() -> None:
    async with CaptureServer(faults=[Fault.reply("dot", 451, match="Subject: spam")]) as server:
        smtp = await client(server)
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await smtp.sendmail(SENDER, [RCPT], b"Subject: spam\r\n\r\nx\r\n")
        assert caught.value.code == 451
        await smtp.sendmail(SENDER, [RCPT], b"Subject: ham\r\n\r\nx\r\n")
        await smtp.quit()
    assert [m.parsed["Subject"] for m in server.messages] == ["ham"]


async def test_421_on_mail_replies_then_closes() -> None:
    async with (
        CaptureServer(faults=[Fault.reply("mail", 421, match="a@")]) as server,
        raw_connection(server) as (reader, writer),
    ):
        await read_reply(reader)
        writer.write(b"HELO me\r\nMAIL FROM:<a@example.com>\r\n")
        await read_reply(reader)
        assert (await read_reply(reader)).startswith(b"421 ")
        assert await reader.read() == b""


async def test_disconnect_at_dot_stores_the_message_but_never_replies() -> None:
    async with CaptureServer(faults=[Fault.disconnect("dot")]) as server:
        smtp = await client(server)
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await smtp.sendmail(SENDER, [RCPT], b"Subject: x\r\n\r\nx\r\n")
        [captured] = await server.wait_for_messages(1)
    assert captured.data == b"Subject: x\r\n\r\nx\r\n"


@pytest.mark.parametrize("phase", ["greeting", "ehlo", "mail", "rcpt", "data"])
async def test_disconnect_closes_instead_of_replying(phase: str) -> None:
    async with CaptureServer(faults=[Fault.disconnect(phase)]) as server:  # type: ignore[arg-type]
        smtp = aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=5)

        async def connect_and_send() -> None:
            await smtp.connect()
            await smtp.sendmail(SENDER, [RCPT], b"Subject: x\r\n\r\nx\r\n")

        with pytest.raises((aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError)):
            await connect_and_send()
        smtp.close()
    assert server.messages == []


async def test_disconnect_mid_data_stores_nothing() -> None:
    body = b"Subject: big\r\n\r\n" + b"x" * 200_000 + b"\r\n"
    async with CaptureServer(faults=[Fault.disconnect_mid_data(after_bytes=100)]) as server:
        smtp = await client(server)
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await smtp.sendmail(SENDER, [RCPT], body)
    assert server.messages == []
    assert server.sessions[0].closed


@pytest.mark.parametrize("phase", ["greeting", "ehlo", "mail", "rcpt", "data"])
async def test_stall_makes_the_client_time_out(phase: str) -> None:
    async with CaptureServer(faults=[Fault.stall(phase)]) as server:  # type: ignore[arg-type]
        smtp = aiosmtplib.SMTP(hostname=server.host, port=server.port, timeout=0.3)

        async def connect_and_send() -> None:
            await smtp.connect()
            await smtp.sendmail(SENDER, [RCPT], b"Subject: x\r\n\r\nx\r\n")

        with pytest.raises((aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPConnectTimeoutError)):
            await connect_and_send()
        smtp.close()
    assert server.messages == []


async def test_stall_at_dot_stores_the_message_and_never_replies() -> None:
    async with CaptureServer(faults=[Fault.stall("dot")]) as server:
        smtp = await client(server)
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await smtp.sendmail(SENDER, [RCPT], b"Subject: x\r\n\r\nx\r\n", timeout=0.3)
        smtp.close()
        assert len(await server.wait_for_messages(1)) == 1


async def test_delay_at_dot_stores_the_message_then_answers_late() -> None:
    """A client that gives up waiting leaves the message stored; a patient one gets a 250."""
    async with CaptureServer(faults=[Fault.delay("dot", 0.5, times=1)]) as server:
        smtp = await client(server)
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await smtp.sendmail(SENDER, [RCPT], b"Subject: x\r\n\r\nx\r\n", timeout=0.1)
        smtp.close()
        assert len(await server.wait_for_messages(1)) == 1
    async with CaptureServer(faults=[Fault.delay("dot", 0.2)]) as server:
        smtp = await client(server)
        errors, reply = await smtp.sendmail(SENDER, [RCPT], b"Subject: x\r\n\r\nx\r\n")
        assert errors == {} and reply.startswith("2.0.0 OK")
        await smtp.quit()


async def test_delay_at_a_command_answers_it_normally_late() -> None:
    async with CaptureServer(faults=[Fault.delay("rcpt", 0.2, match="slow@")]) as server:
        smtp = await client(server)
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await smtp.sendmail(
                SENDER, ["slow@example.com"], b"Subject: x\r\n\r\nx\r\n", timeout=0.05
            )
        smtp.close()
    assert server.messages == []


def test_delay_needs_seconds_and_a_command_or_the_dot() -> None:
    with pytest.raises(ValueError, match="positive"):
        Fault.delay("dot", 0)
    with pytest.raises(ValueError, match="command or the final dot"):
        Fault.delay("greeting", 1.0)


async def test_stall_mid_data_swallows_the_rest_and_stores_nothing() -> None:
    async with CaptureServer(faults=[Fault.stall("mid_data", after_bytes=10)]) as server:
        smtp = await client(server)
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await smtp.sendmail(SENDER, [RCPT], b"Subject: x\r\n\r\n" + b"y" * 100, timeout=0.3)
        smtp.close()
    assert server.messages == []


async def test_close_idle_closes_a_connection_that_sends_nothing() -> None:
    async with CaptureServer(faults=[Fault.close_idle(0.2)]) as server:
        async with raw_connection(server) as (reader, writer):
            await read_reply(reader)
            writer.write(b"EHLO me\r\n")
            await read_reply(reader)
            async with asyncio.timeout(5):
                assert await reader.read() == b""
        assert server.sessions[0].closed


async def test_close_idle_spares_a_connection_waiting_for_a_stalled_reply() -> None:
    """Idle means the server waits for a command; a stalled command is not idle."""
    faults = [Fault.close_idle(0.05), Fault.stall("mail", times=1)]
    async with CaptureServer(faults=faults) as server:
        idle = await client(server)  # an idle connection, to observe the idle clock firing
        busy = await client(server)
        with pytest.raises(aiosmtplib.SMTPTimeoutError):  # not SMTPServerDisconnected
            await busy.mail(SENDER, timeout=0.3)
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await idle.noop()
        busy.close()


async def test_injected_close_idle_applies_to_open_connections() -> None:
    async with CaptureServer() as server:
        async with raw_connection(server) as (reader, _writer):
            await read_reply(reader)
            server.inject(Fault.close_idle(0.1, times=1))
            async with asyncio.timeout(5):
                assert await reader.read() == b""


async def test_drop_connections_closes_every_client_at_once() -> None:
    async with CaptureServer() as server:
        clients = [await client(server) for _ in range(2)]
        await server.drop_connections()
        assert all(session.closed for session in server.sessions)
        for smtp in clients:
            with pytest.raises(aiosmtplib.SMTPServerDisconnected):
                await smtp.noop()


async def test_inject_adds_a_fault_at_runtime() -> None:
    async with CaptureServer() as server:
        smtp = await client(server)
        server.inject(Fault.reply("rset", 500))
        with pytest.raises(aiosmtplib.SMTPResponseException):
            await smtp.rset()
        await smtp.quit()


async def test_shutdown_with_a_stalled_client_leaves_no_task_behind() -> None:
    before = asyncio.all_tasks()
    async with CaptureServer(faults=[Fault.stall("mail")]) as server:
        async with raw_connection(server) as (reader, writer):
            await read_reply(reader)
            writer.write(b"HELO me\r\nMAIL FROM:<a@example.com>\r\n")
            await read_reply(reader)
            await asyncio.wait_for(_wait_for_command(server, "MAIL FROM:<a@example.com>"), 5)
            await server.aclose()
            assert await reader.read() == b""
    assert asyncio.all_tasks() == before


async def _wait_for_command(server: CaptureServer, command: str) -> None:
    # The record is written by a protocol callback; polling it is the simplest sync point.
    while not server.sessions or command not in server.sessions[0].commands:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def test_fault_constructors_validate_their_arguments() -> None:
    with pytest.raises(ValueError, match="unknown phase"):
        Fault.reply("hello", 451)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="code"):
        Fault.reply("mail", 99)
    with pytest.raises(ValueError, match="no argument to match"):
        Fault.disconnect("greeting", match="x")
    with pytest.raises(ValueError, match="after_bytes"):
        Fault.stall("mid_data")
    with pytest.raises(ValueError, match="times"):
        Fault.disconnect("dot", times=0)
    with pytest.raises(ValueError, match="positive"):
        Fault.close_idle(0)
    with pytest.raises(ValueError, match="greeting fault"):
        Fault.reply("greeting", 250)


def test_server_options_are_validated() -> None:
    with pytest.raises(ValueError, match="tls"):
        CaptureServer(tls="ssl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="require_starttls"):
        CaptureServer(require_starttls=True)
    with pytest.raises(ValueError, match="require_auth"):
        CaptureServer(require_auth=True)


# --- thread mode and the plugin ---------------------------------------------------------


def test_thread_mode_serves_sync_code() -> None:
    with CaptureServer(tls="starttls").run_in_thread() as server:
        assert threading.current_thread() is threading.main_thread()
        with smtplib.SMTP(server.host, server.port, timeout=5) as smtp:
            smtp.starttls(context=server.client_ssl_context())
            smtp.sendmail(SENDER, [RCPT], make_message().as_bytes())
        [captured] = server.wait_for_messages_sync(1)
        assert captured.tls
    assert server.sessions[0].closed


async def test_thread_mode_serves_async_code_on_another_loop() -> None:
    with CaptureServer().run_in_thread() as server:
        await aiosmtplib.send(make_message(), hostname=server.host, port=server.port)
        [captured] = await server.wait_for_messages(1)
        await server.drop_connections()
    assert captured.recipients == (RCPT,)


def test_drop_connections_sync_closes_clients_of_a_threaded_server() -> None:
    with CaptureServer().run_in_thread() as server:
        with smtplib.SMTP(server.host, server.port, timeout=5) as smtp:
            smtp.noop()
            server.drop_connections_sync()
            assert server.sessions[0].closed
            with pytest.raises(smtplib.SMTPServerDisconnected):
                smtp.noop()


def test_wait_for_messages_sync_times_out() -> None:
    with CaptureServer().run_in_thread() as server, pytest.raises(TimeoutError):
        server.wait_for_messages_sync(1, timeout=0.05)


def test_plugin_fixtures_and_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import smtplib
        import pytest
        from asyncmail.testing import Fault

        def test_default(mail_server, mail_outbox):
            assert mail_server.url.endswith("?tls=none")
            with smtplib.SMTP(mail_server.host, mail_server.port) as smtp:
                smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: hi\\r\\n\\r\\nx\\r\\n")
            mail_server.wait_for_messages_sync(1)
            assert mail_outbox[0].parsed["Subject"] == "hi"

        @pytest.mark.mail_server(tls="starttls", faults=[Fault.reply("rcpt", 550)])
        def test_marker(mail_server, mail_outbox):
            assert mail_server.tls == "starttls"
            with smtplib.SMTP(mail_server.host, mail_server.port) as smtp:
                smtp.starttls(context=mail_server.client_ssl_context())
                with pytest.raises(smtplib.SMTPRecipientsRefused):
                    smtp.sendmail("a@example.com", ["b@example.com"], b"x\\r\\n")
            assert mail_outbox == []
        """
    )
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
    )
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


#: The README's pytest example ("Testing your own code"), as a user's project has it.
README_EXAMPLE = Path(__file__).parent / "fixtures" / "readme_testing.py"
ROOT = Path(__file__).resolve().parent.parent


def test_readme_example_passes_in_a_project_in_pytest_asyncio_strict_mode(
    pytester: pytest.Pytester,
) -> None:
    """The plugin's fixtures and marker, as installed (its entry point), no asyncio_mode set."""
    pytester.makepyfile(test_welcome=README_EXAMPLE.read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_subprocess("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert "asyncio: mode=Mode.STRICT" in result.stdout.str()


def test_the_testing_extra_brings_what_the_readme_example_needs() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extra = pyproject["project"]["optional-dependencies"]["testing"]
    names = {re.split(r"[<>=\[ ;]", r)[0].lower() for r in extra}
    assert {"aiosmtpd", "trustme", "pytest", "pytest-asyncio"} <= names


def test_plugin_empties_the_memory_outbox_before_each_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio
        import pytest
        from asyncmail import Mailer, Message
        from asyncmail.testing import MailOutbox, outbox

        def send(n):
            async def go():
                async with Mailer("memory://") as mailer:
                    for i in range(n):
                        await mailer.send(Message(sender="a@example.com", to="b@example.com"))
            asyncio.run(go())

        def test_first(memory_outbox):
            send(2)
            assert memory_outbox is outbox
            memory_outbox.assert_count(2)

        def test_second_starts_empty():
            assert len(outbox) == 0
            send(1)
            outbox.assert_count(1)

        def test_mail_outbox_is_a_live_mail_outbox(mail_server, mail_outbox):
            assert isinstance(mail_outbox, MailOutbox)
            assert mail_outbox is mail_server.messages
        """
    )
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
    )
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


# --- public API ---------------------------------------------------------------------------


def test_all_is_sorted_and_names_report_asyncmail_testing() -> None:
    assert list(asyncmail.testing.__all__) == sorted(asyncmail.testing.__all__)
    for name in asyncmail.testing.__all__:
        assert getattr(asyncmail.testing, name).__module__ == "asyncmail.testing", name


def test_importing_asyncmail_does_not_import_the_testing_extras() -> None:
    code = (
        "import sys, asyncmail, asyncmail.testing, asyncmail.testing._plugin; "
        "assert not {'aiosmtpd', 'trustme'} & set(sys.modules), sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_server_closes_after_a_client_abandons_the_starttls_handshake() -> None:
    """A client that rejects the certificate and hangs up must not keep the server open."""
    server = CaptureServer(tls="starttls")
    async with server:
        client = aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False)
        await client.connect()
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.starttls()  # the system CAs do not know the test CA
        client.close()
    assert all(session.closed for session in server.sessions)


async def test_statistics_are_a_frozen_snapshot_of_live_counts() -> None:
    async with CaptureServer() as server:
        client = aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False)
        await client.connect()
        await client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nhi\r\n")
        stats = server.statistics()
        await client.quit()
    assert (stats.messages, stats.open_connections, stats.connections_opened) == (1, 1, 1)
    assert stats.max_concurrent_connections == 1
    with pytest.raises(AttributeError):
        stats.messages = 2  # type: ignore[misc]
