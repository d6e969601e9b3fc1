"""asyncmail.django.EmailBackend: Django's own mail API, delivered through a warm pool."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

if not settings.configured:  # (once per session: Django's settings are process-wide)
    settings.configure(EMAIL_BACKEND="asyncmail.django.EmailBackend", USE_TZ=True)

from django.core import mail
from django.test.utils import override_settings

from asyncmail import (
    ConfigError,
    Mailer,
    Outbox,
    Rejected,
    Server,
    Status,
    TLSMode,
    WrongEventLoopError,
)
from asyncmail.django import EmailBackend, close_mailers
from asyncmail.django._settings import Overrides, frozen, server_and_options
from asyncmail.testing import CaptureServer, Fault, MailOutbox, SentMessage
from asyncmail.testing._thread import ServerThread


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    """A capture server that the backend sends to (ASYNCMAIL_URL), its mailers closed after."""
    with CaptureServer().run_in_thread() as running:
        with override_settings(ASYNCMAIL_URL=running.url):
            try:
                yield running
            finally:
                close_mailers()


def refusing() -> ServerThread:
    return CaptureServer(faults=[Fault.reply("rcpt", 550, "5.1.1 No such user")]).run_in_thread()


def test_send_mail_delivers_with_a_utf8_subject_and_the_from_email_as_sender(
    server: CaptureServer,
) -> None:
    sent = mail.send_mail(
        "Grüße, 你好 ✓", "Hällo Bob", "Shop <shop@example.com>", ["bob@example.org"]
    )
    assert sent == 1
    [captured] = server.messages
    assert captured.envelope_sender == "shop@example.com"
    assert captured.recipients == ("bob@example.org",)
    assert captured.parsed["Subject"] == "Grüße, 你好 ✓"
    assert captured.parsed["From"] == "Shop <shop@example.com>"
    body = captured.parsed.get_body(("plain",))
    assert body is not None
    assert body.get_content().strip() == "Hällo Bob"


def test_bcc_recipients_are_in_the_envelope_and_never_in_the_headers(
    server: CaptureServer,
) -> None:
    message = mail.EmailMessage(
        "Quarterly",
        "See the figures.",
        "shop@example.com",
        to=["to@example.org"],
        cc=["cc@example.org"],
        bcc=["hidden@example.org", "audit@example.net"],
        reply_to=["support@example.com"],
        headers={"X-Campaign": "q3"},
    )
    assert message.send() == 1
    [captured] = server.messages
    assert set(captured.recipients) == {
        "to@example.org",
        "cc@example.org",
        "hidden@example.org",
        "audit@example.net",
    }
    assert b"hidden@example.org" not in captured.data
    assert b"audit@example.net" not in captured.data
    assert "Bcc" not in captured.parsed
    assert captured.parsed["Cc"] == "cc@example.org"
    assert captured.parsed["Reply-To"] == "support@example.com"
    assert captured.parsed["X-Campaign"] == "q3"


def test_an_html_alternative_and_an_attachment_arrive_as_django_made_them(
    server: CaptureServer,
) -> None:
    message = mail.EmailMultiAlternatives(
        "Your report", "Plain text", "shop@example.com", ["bob@example.org"]
    )
    message.attach_alternative("<p>HTML <b>text</b> ✓</p>", "text/html")
    message.attach("report.csv", "name,total\nÄrger,3\n", "text/csv")
    assert message.send() == 1
    [captured] = server.messages
    html = captured.parsed.get_body(("html",))
    assert html is not None
    assert "<p>HTML <b>text</b> ✓</p>" in html.get_content()
    [attachment] = captured.parsed.iter_attachments()
    assert attachment.get_filename() == "report.csv"
    assert attachment.get_content().replace("\r\n", "\n") == "name,total\nÄrger,3\n"


def test_a_display_from_and_to_in_the_headers_leave_the_envelope_as_django_says(
    server: CaptureServer,
) -> None:
    """As Django's SMTP backend: MAIL FROM is from_email, RCPT TO are recipients()."""
    message = mail.EmailMessage(
        "Hi",
        "Body",
        "bounces@example.com",
        to=["a@example.org", "b@example.org"],
        headers={"From": "News <news@example.com>", "To": "undisclosed-recipients:;"},
    )
    assert message.send() == 1
    [captured] = server.messages
    assert captured.envelope_sender == "bounces@example.com"
    assert captured.recipients == ("a@example.org", "b@example.org")
    assert captured.parsed["From"] == "News <news@example.com>"
    assert captured.parsed["To"] == "undisclosed-recipients:;"


def test_the_pool_stays_warm_across_backends_and_calls(server: CaptureServer) -> None:
    """Django makes a backend per call: they share one SyncMailer and its connection."""
    datatuples = [
        (f"Note {i}", "Body", "shop@example.com", [f"u{i}@example.org"]) for i in range(5)
    ]
    assert mail.send_mass_mail(datatuples) == 5
    assert mail.send_mail("One more", "Body", "shop@example.com", ["z@example.org"]) == 1
    with mail.get_connection() as connection:
        messages = [
            mail.EmailMessage(f"In context {i}", "Body", "shop@example.com", [f"c{i}@example.org"])
            for i in range(2)
        ]
        assert connection.send_messages(messages) == 2
    assert mail.send_mail("After close", "Body", "shop@example.com", ["y@example.org"]) == 1
    assert len(server.messages) == 9
    assert server.connections_opened == 1


def test_mail_admins_reaches_the_admins(server: CaptureServer) -> None:
    import django

    admin = "Admin <admin@example.org>"
    admins = [("Admin", "admin@example.org")] if django.VERSION < (6,) else [admin]
    with override_settings(ADMINS=admins, SERVER_EMAIL="server@example.com"):
        mail.mail_admins("Disk full", "Only 1% left.", html_message="<p>Only 1% left.</p>")
    [captured] = server.messages
    assert captured.envelope_sender == "server@example.com"
    assert captured.recipients == ("admin@example.org",)
    assert captured.parsed["Subject"] == "[Django] Disk full"
    assert captured.parsed.get_body(("html",)) is not None


def test_a_message_without_recipients_is_skipped_and_not_counted(server: CaptureServer) -> None:
    empty = mail.EmailMessage("Nobody", "Body", "shop@example.com", to=[])
    assert mail.get_connection().send_messages([empty]) == 0
    assert mail.get_connection().send_messages([]) == 0
    assert server.connections_opened == 0


def test_fail_silently_returns_0_for_a_refusing_server_and_the_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with refusing() as server, override_settings(ASYNCMAIL_URL=server.url):
        try:
            caplog.set_level(logging.WARNING, logger="asyncmail")
            sent = mail.send_mail(
                "Hi", "Body", "shop@example.com", ["nobody@example.org"], fail_silently=True
            )
        finally:
            close_mailers()
    assert sent == 0
    assert server.messages == []
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "nobody@example.org" in warning.getMessage()


def test_without_fail_silently_the_typed_error_is_raised_with_its_code() -> None:
    with refusing() as server, override_settings(ASYNCMAIL_URL=server.url):
        try:
            with pytest.raises(Rejected) as caught:
                mail.send_mail("Hi", "Body", "shop@example.com", ["nobody@example.org"])
        finally:
            close_mailers()
    assert (caught.value.code, caught.value.enhanced_code) == (550, "5.1.1")
    assert caught.value.result is not None
    assert caught.value.result.status is Status.FAILED


def test_without_asyncmail_url_the_server_comes_from_djangos_email_settings() -> None:
    with CaptureServer().run_in_thread() as server:
        email_settings = override_settings(
            ASYNCMAIL_URL=None,
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=server.port,
            EMAIL_TIMEOUT=5,
            ASYNCMAIL_OPTIONS={"max_connections": 2},
        )
        with email_settings:
            try:
                backend = mail.get_connection()
                backend.open()
                text = repr(backend)
                sent = mail.send_mail("Hi", "Body", "shop@example.com", ["bob@example.org"])
            finally:
                close_mailers()
    assert sent == 1
    assert f"none://127.0.0.1:{server.port}" in text
    assert "pool=0/0/2" in text
    assert [m.recipients for m in server.messages] == [("bob@example.org",)]


def test_send_mails_auth_user_and_password_override_the_url() -> None:
    """``send_mail(auth_user=, auth_password=)``: another login, and so another pool."""
    auth = {"default-user": "pw-1", "other-user": "pw-2"}
    with CaptureServer(auth=auth, auth_require_tls=False).run_in_thread() as server:
        url = f"smtp://default-user:pw-1@127.0.0.1:{server.port}?tls=none&allow_plaintext_auth=1"
        with override_settings(ASYNCMAIL_URL=url):
            try:
                mail.send_mail("Hi", "Body", "shop@x.org", ["a@x.org"])
                mail.send_mail(
                    "Hi",
                    "Body",
                    "shop@x.org",
                    ["b@x.org"],
                    auth_user="other-user",
                    auth_password="pw-2",
                )
            finally:
                close_mailers()
    assert [s.authenticated_as for s in server.sessions] == ["default-user", "other-user"]
    assert len(server.messages) == 2


def test_the_password_from_the_settings_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASYNCMAIL_URL", raising=False)
    secret = override_settings(
        ASYNCMAIL_URL=None,
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=2525,
        EMAIL_HOST_USER="mailuser",
        EMAIL_HOST_PASSWORD="s3cret-pw",
        EMAIL_USE_TLS=True,
    )
    with secret:
        try:
            backend = mail.get_connection()
            backend.open()
            text = repr(backend)
        finally:
            close_mailers()
    assert "starttls://mailuser@127.0.0.1:2525" in text
    assert "s3cret" not in text


def test_the_backends_arguments_override_the_url_and_the_email_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ASYNCMAIL_URL", raising=False)
    given = Overrides(host="mx.example.net", port=2465, use_ssl=True, username="u", password="p")
    with override_settings(ASYNCMAIL_URL="smtp://a:b@smtp.example.com?local_hostname=me.example"):
        server, options = server_and_options(given)
        plain, _ = server_and_options(Overrides())
    assert isinstance(server, Server)
    assert (server.host, server.port, server.tls_mode) == ("mx.example.net", 2465, TLSMode.IMPLICIT)
    assert (server.username, server.password) == ("u", "p")
    assert server.local_hostname == "me.example"  # the URL's other options stay
    assert plain == "smtp://a:b@smtp.example.com?local_hostname=me.example"  # as written
    assert options == {}
    with override_settings(ASYNCMAIL_URL=None, EMAIL_HOST_USER="x", EMAIL_USE_TLS=True):
        server, _ = server_and_options(Overrides(username="", port=2587, timeout=3))
    assert isinstance(server, Server)
    assert (server.username, server.port, server.tls_mode) == (None, 2587, TLSMode.STARTTLS)


def test_the_shared_mailers_key_takes_options_that_do_not_hash() -> None:
    unhashable = {"a": [1, {"b": 2}], "c": bytearray(b"x")}
    key = frozen(unhashable)
    assert hash(key) == hash(frozen(unhashable))
    assert frozen({"a": [1]}) != frozen({"a": [2]})


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"EMAIL_USE_TLS": True, "EMAIL_USE_SSL": True}, "mutually exclusive"),
        ({"ASYNCMAIL_OPTIONS": {"max_conections": 2}}, "unknown Mailer option.*max_conections"),
        ({"ASYNCMAIL_OPTIONS": {"max_connections": 0}}, "max_connections must be"),
        ({"EMAIL_SSL_CERTFILE": "/tmp/client.pem"}, "EMAIL_SSL_CERTFILE"),
        ({"EMAIL_HOST": "bad host"}, "EMAIL_"),
        ({"EMAIL_TIMEOUT": "soon"}, "EMAIL_TIMEOUT must be a number"),
        ({"ASYNCMAIL_OPTIONS": [("max_connections", 2)]}, "ASYNCMAIL_OPTIONS must be a dict"),
    ],
)
def test_bad_settings_raise_a_config_error_naming_them(
    changes: dict[str, object], error: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ASYNCMAIL_URL", raising=False)
    with override_settings(ASYNCMAIL_URL=None, **changes):
        with pytest.raises(ConfigError, match=error):
            mail.send_mail(
                "Hi", "Body", "shop@example.com", ["bob@example.org"], fail_silently=True
            )


def test_a_memory_url_keeps_djangos_mail_in_the_test_outbox(
    memory_outbox: MailOutbox[SentMessage],
) -> None:
    with override_settings(ASYNCMAIL_URL="memory://"):
        try:
            message = mail.EmailMessage(
                "Hi", "Body", "shop@x.org", to=["a@x.org"], bcc=["hidden@x.org"]
            )
            assert message.send() == 1
        finally:
            close_mailers()
    [sent] = memory_outbox
    assert sent.recipients == ("a@x.org", "hidden@x.org")
    assert sent.subject == "Hi"
    assert b"hidden@x.org" not in sent.data


async def test_an_async_view_sends_through_sync_to_async(server: CaptureServer) -> None:
    """Called in the event loop itself, send() would block it: sync_to_async is the way."""
    from asgiref.sync import sync_to_async

    send_mail = sync_to_async(mail.send_mail)
    assert await send_mail("Hi", "Body", "shop@x.org", ["a@x.org"]) == 1
    with pytest.raises(WrongEventLoopError):
        mail.send_mail("Hi", "Body", "shop@x.org", ["b@x.org"])
    assert [m.recipients for m in server.messages] == [("a@x.org",)]


def test_the_backend_is_the_one_djangos_settings_name() -> None:
    assert isinstance(mail.get_connection(), EmailBackend)
    assert EmailBackend.__module__ == "asyncmail.django"


def test_importing_asyncmail_does_not_import_django() -> None:
    code = "import sys, asyncmail; sys.exit('django' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


async def test_djangos_mime_message_also_goes_straight_to_mailer_send_and_the_outbox(
    tmp_path: Path,
) -> None:
    """Django's SafeMIME classes override as_bytes() without a policy argument: the stdlib
    path serialises through the base class's method instead of failing."""
    made = mail.EmailMessage("Réunion", "Bonjour", "shop@example.com", ["bob@example.org"])
    mime = made.message()
    assert type(mime).__module__.startswith("django.")
    async with CaptureServer() as capture, Mailer(capture.url) as mailer:
        await mailer.send(mime)
        async with Outbox(f"sqlite:///{tmp_path / 'o.db'}") as outbox:
            await outbox.enqueue(mime, key="django-mime")
            async with outbox.deliver(mailer):
                await capture.wait_for_messages(2)
    assert [m.parsed["Subject"] for m in capture.messages] == ["Réunion", "Réunion"]
    assert all(m.recipients == ("bob@example.org",) for m in capture.messages)
