"""Delivery over plain SMTP, STARTTLS and implicit TLS; AUTH; UTF-8; secrets kept secret."""

from __future__ import annotations

import email.message
import logging
import ssl

import pytest

from asyncmail import (
    AuthenticationError,
    ConfigError,
    Mailer,
    MailerClosedError,
    MessageError,
    NotSupportedError,
    Rejected,
    Server,
    Status,
    TLSError,
    TLSMode,
)
from asyncmail.testing import CaptureServer, Fault

from ._support import mailer_for, message


async def test_a_message_is_delivered_with_its_envelope_and_bytes() -> None:
    msg = message(bcc=["audit@example.com"], cc=["cc@example.org"])
    async with CaptureServer() as server:
        async with mailer_for(server) as mailer:
            result = await mailer.send(msg)
    assert result.status is Status.DELIVERED
    assert result.ok
    assert result.message is msg
    assert result.message_id == msg.message_id
    assert result.attempts == 1
    assert result.reply is not None
    assert result.reply.code == 250
    assert set(result.accepted) == {"user0@example.net", "cc@example.org", "audit@example.com"}
    [captured] = server.messages
    assert captured.envelope_sender == "shop@example.com"
    assert set(captured.recipients) == set(result.accepted)
    assert b"audit@example.com" not in captured.data  # Bcc only in the envelope
    assert captured.parsed["Subject"] == "订单确认 #0"
    body = captured.parsed.get_body(("plain",))
    assert body is not None
    assert "A line with a lone dot above." in body.get_content()
    assert "\n.\n" in body.get_content().replace("\r\n", "\n")  # the server un-stuffed it


async def test_stdlib_email_messages_are_sent_too() -> None:
    msg = email.message.EmailMessage()
    msg["From"] = "Shop <shop@example.com>"
    msg["To"] = "bob@example.org"
    msg["Bcc"] = "hidden@example.org"
    msg["Subject"] = "Hello"
    msg.set_content("Hi Bob")
    async with CaptureServer() as server:
        async with mailer_for(server) as mailer:
            result = await mailer.send(msg)
    assert result.status is Status.DELIVERED
    [captured] = server.messages
    assert set(captured.recipients) == {"bob@example.org", "hidden@example.org"}
    assert b"hidden@example.org" not in captured.data
    assert captured.parsed["Subject"] == "Hello"


async def test_invalid_input_fails_before_any_connection_is_made() -> None:
    msg = email.message.EmailMessage()
    msg["From"] = "shop@example.com"
    msg["Subject"] = "no recipients"
    async with CaptureServer() as server:
        async with mailer_for(server) as mailer:
            with pytest.raises(MessageError):
                await mailer.send(msg)
    assert server.connections_opened == 0


async def test_starttls_with_auth_over_a_verified_certificate() -> None:
    async with CaptureServer(tls="starttls", require_starttls=True, auth={"u": "p@ss"}) as server:
        async with mailer_for(server, username="u", password="p@ss") as mailer:
            result = await mailer.send(message())
    assert result.status is Status.DELIVERED
    [captured] = server.messages
    assert captured.tls
    assert captured.authenticated_as == "u"


async def test_implicit_tls_with_auth() -> None:
    async with CaptureServer(tls="implicit", auth={"u": "p"}) as server:
        async with mailer_for(server, username="u", password="p") as mailer:
            result = await mailer.send(message())
    assert result.status is Status.DELIVERED
    assert server.messages[0].tls
    assert server.messages[0].authenticated_as == "u"


async def test_url_with_ca_file_reaches_an_implicit_tls_server() -> None:
    async with CaptureServer(tls="implicit") as server:
        url = f"smtps://localhost:{server.port}?ca_file={server.ca_file}"
        async with Mailer(url) as mailer:
            result = await mailer.send(message())
    assert result.status is Status.DELIVERED


async def test_an_untrusted_certificate_is_refused() -> None:
    async with CaptureServer(tls="starttls") as server:
        untrusting = ssl.create_default_context()  # the system CAs do not know the test CA
        target = Server(host=server.host, port=server.port, ssl_context=untrusting)
        async with Mailer(target) as mailer:
            with pytest.raises(TLSError):
                await mailer.send(message())
    assert server.messages == []


async def test_credentials_are_never_sent_over_plaintext() -> None:
    # this server offers AUTH without TLS; the password must not reach it
    async with CaptureServer(auth={"u": "secret"}, auth_require_tls=False) as server:
        async with mailer_for(server, username="u", password="secret") as mailer:
            with pytest.raises(AuthenticationError, match="unencrypted"):
                await mailer.send(message())
    commands = [c.upper() for s in server.sessions for c in s.commands]
    assert not any(c.startswith("AUTH") for c in commands)
    assert server.messages == []


async def test_plaintext_auth_is_possible_when_explicitly_allowed() -> None:
    async with CaptureServer(auth={"u": "secret"}, auth_require_tls=False) as server:
        async with mailer_for(
            server, username="u", password="secret", allow_plaintext_auth=True
        ) as mailer:
            result = await mailer.send(message())
    assert result.status is Status.DELIVERED
    assert server.messages[0].authenticated_as == "u"


@pytest.mark.parametrize("mechanism", ["CRAM-MD5", "PLAIN", "LOGIN"])
async def test_each_auth_mechanism_works(mechanism: str) -> None:
    async with CaptureServer(tls="starttls", auth={"u": "p"}) as server:
        async with mailer_for(
            server, username="u", password="p", auth_mechanism=mechanism.lower()
        ) as mailer:
            result = await mailer.send(message())
    assert result.status is Status.DELIVERED
    assert server.messages[0].authenticated_as == "u"
    auth = [c for s in server.sessions for c in s.commands if c.upper().startswith("AUTH")]
    assert [a.upper().split()[:2] for a in auth] == [["AUTH", mechanism]]


async def test_a_wrong_password_is_tried_once_then_the_session_quits() -> None:
    """Lockouts and fail2ban count failures: one send must cost one failed AUTH."""
    async with CaptureServer(tls="starttls", auth={"u": "right"}) as server:
        async with mailer_for(server, username="u", password="wrong") as mailer:
            with pytest.raises(AuthenticationError):
                await mailer.send(message())
    [session] = server.sessions
    commands = [c.upper().split()[0] for c in session.commands]
    assert commands.count("AUTH") == 1
    assert commands[-1] == "QUIT"


async def test_a_mechanism_the_server_lacks_is_a_clear_error() -> None:
    async with CaptureServer(tls="starttls", xoauth2_tokens={"u": "t"}) as server:
        async with mailer_for(server, username="u", password="p", auth_mechanism="plain") as m:
            with pytest.raises(AuthenticationError, match="XOAUTH2"):
                await m.send(message())
    assert server.messages == []


def test_an_unknown_auth_mechanism_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="auth_mechanism"):
        Server.from_url("smtp://u:p@127.0.0.1:2525?auth=digest-md5")


async def test_the_default_ehlo_name_is_a_qualified_name_or_an_address_literal() -> None:
    """Strict relays refuse a bare 'localhost' (RFC 5321 4.1.4 wants an FQDN or a literal)."""
    async with CaptureServer() as server:
        async with mailer_for(server) as mailer:
            await mailer.send(message())
    [ehlo] = [c for c in server.sessions[0].commands if c.upper().startswith("EHLO")]
    name = ehlo.split()[1]
    assert name == "[127.0.0.1]" or ("." in name and name != "localhost")


async def test_xoauth2_refreshes_the_token_once_on_failure() -> None:
    tokens = iter(["expired-token", "fresh-token"])
    calls = 0

    async def provider() -> str:
        nonlocal calls
        calls += 1
        return next(tokens)

    async with CaptureServer(
        tls="starttls", xoauth2_tokens={"u@example.com": "fresh-token"}
    ) as server:
        async with mailer_for(server, username="u@example.com", oauth_token=provider) as mailer:
            result = await mailer.send(message())
    assert result.status is Status.DELIVERED
    assert calls == 2
    assert server.messages[0].authenticated_as == "u@example.com"


async def test_non_ascii_local_part_uses_smtputf8_when_offered() -> None:
    async with CaptureServer(smtputf8=True) as server:
        async with mailer_for(server) as mailer:
            result = await mailer.send(message(to=["用户@例え.jp"]))
    assert result.status is Status.DELIVERED
    [captured] = server.messages
    assert "SMTPUTF8" in captured.mail_options
    assert captured.recipients == ("用户@例え.jp",)


async def test_non_ascii_local_part_without_smtputf8_is_a_permanent_error() -> None:
    async with CaptureServer(smtputf8=False) as server:
        async with mailer_for(server) as mailer:
            with pytest.raises(NotSupportedError) as caught:
                await mailer.send(message(to=["用户@example.com"]))
    assert not caught.value.retryable
    assert caught.value.result is not None
    assert caught.value.result.attempts == 1
    assert server.messages == []


async def test_idn_domains_are_idna_encoded_without_smtputf8() -> None:
    async with CaptureServer(smtputf8=False) as server:
        async with mailer_for(server) as mailer:
            result = await mailer.send(message(to=["bob@例え.jp"]))
    assert result.status is Status.DELIVERED
    [captured] = server.messages
    assert captured.recipients == ("bob@xn--r8jz45g.jp",)
    assert captured.data.isascii()


async def test_debug_transcript_never_contains_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with CaptureServer(tls="starttls", auth={"u": "hunter2-secret"}) as server:
        async with mailer_for(server, username="u", password="hunter2-secret") as mailer:
            await mailer.send(message())
            bad = mailer_for(server, username="u", password="hunter2-wrong")
            async with bad:
                with pytest.raises(AuthenticationError) as caught:
                    await bad.send(message())
    assert any(r.name == "asyncmail" for r in caplog.records)
    assert "hunter2" not in caplog.text
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(caught.value)


async def test_an_error_inside_the_mailer_block_comes_out_unwrapped() -> None:
    async with CaptureServer() as server:
        with pytest.raises(KeyError):
            async with mailer_for(server):
                raise KeyError("mine")


async def test_a_closed_mailer_refuses_work_and_cannot_be_reentered() -> None:
    async with CaptureServer() as server:
        mailer = mailer_for(server)
        async with mailer:
            await mailer.send(message())
        with pytest.raises(MailerClosedError):
            await mailer.send(message())
        with pytest.raises(MailerClosedError):
            async with mailer:
                pass


async def test_tls_mode_none_never_upgrades() -> None:
    async with CaptureServer(tls="starttls") as server:
        async with mailer_for(server, tls=TLSMode.NONE) as mailer:
            await mailer.send(message())
    assert not server.messages[0].tls


async def test_loopback_default_uses_starttls_even_with_a_self_signed_certificate() -> None:
    """Plaintext would be allowed on loopback, so unauthenticated TLS is strictly better."""
    async with CaptureServer(tls="starttls") as server:
        async with Mailer(f"smtp://127.0.0.1:{server.port}") as mailer:
            result = await mailer.send(message())
    assert result.status is Status.DELIVERED
    assert server.messages[0].tls


async def test_explicit_starttls_on_loopback_still_verifies_the_certificate() -> None:
    async with CaptureServer(tls="starttls") as server:
        async with Mailer(f"smtp://127.0.0.1:{server.port}?tls=starttls") as mailer:
            with pytest.raises(TLSError):
                await mailer.send(message())
    assert server.messages == []


async def test_a_server_that_refuses_ehlo_is_greeted_with_helo() -> None:
    async with CaptureServer(
        faults=[Fault.reply("ehlo", 502, "5.5.1 EHLO not implemented", times=1)]
    ) as server:
        async with mailer_for(server) as mailer:
            result = await mailer.send(message())
    assert result.status is Status.DELIVERED
    assert any(c.upper().startswith("HELO") for s in server.sessions for c in s.commands)


async def test_stdlib_message_without_id_or_date_gets_both_and_keeps_the_id() -> None:
    msg = email.message.EmailMessage()
    msg["From"] = "shop@example.com"
    msg["To"] = "bob@example.org"
    msg.set_content("no Message-ID, no Date")
    fault = Fault.reply("dot", 451, "4.3.0 try again", times=1)
    async with CaptureServer(faults=[fault]) as server:
        async with mailer_for(server) as mailer:
            result = await mailer.send(msg)
    assert result.attempts == 2
    assert result.message_id is not None
    assert result.message_id.endswith("@example.com>")
    [captured] = server.messages
    assert captured.parsed["Message-ID"] == result.message_id
    assert captured.parsed["Date"] is not None
    assert "Message-ID" not in msg  # the caller's message is untouched
    assert "Date" not in msg


async def test_a_message_over_the_servers_size_limit_is_refused_before_sending() -> None:
    async with CaptureServer() as server:  # aiosmtpd announces SIZE 33554432
        async with mailer_for(server) as mailer:
            with pytest.raises(Rejected) as caught:
                await mailer.send(message(text="x" * 70 + "\n" * 1 + ("y" * 76 + "\n") * 450_000))
    assert caught.value.code == 552
    assert caught.value.enhanced_code == "5.3.4"
    assert not caught.value.retryable
    assert not any(c.upper().startswith("MAIL") for s in server.sessions for c in s.commands)


async def test_a_stdlib_message_that_cannot_go_on_the_wire_fails_before_any_connection() -> None:
    """A line over 998 octets is a MessageError raised before connecting, not after."""
    import email.message

    msg = email.message.EmailMessage()
    msg["From"] = "shop@example.com"
    msg["To"] = "a@example.net"
    msg.set_content("x" * 2000 + "\n", cte="8bit")
    async with CaptureServer() as server:
        async with mailer_for(server) as mailer:
            with pytest.raises(MessageError):
                await mailer.send(msg)
    assert server.statistics().connections_opened == 0
