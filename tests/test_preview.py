"""``asyncmail serve --web``: the preview's pages and JSON API over real HTTP, after real SMTP.

Mail goes in through asyncmail's Mailer to the capture server ``asyncmail serve`` runs
(``maildir_server``), and comes out through urllib against the ``PreviewServer`` on port 0.
"""

from __future__ import annotations

import json
import mailbox
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
from collections.abc import Sequence
from email.message import EmailMessage
from http import HTTPStatus
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncmail import Attachment, DeliveryError, Message
from asyncmail.cli._app import cli
from asyncmail.cli._serve import parse_web_address
from asyncmail.preview import MessageStore, PreviewServer
from asyncmail.preview._http import Request, parse_request
from asyncmail.preview._pages import message_page
from asyncmail.preview._parse import details, parse
from asyncmail.preview._routes import listing
from asyncmail.preview._server import is_loopback

from ._preview import SENDER, fetch, request, running, send

CJK_HTML = (
    "<h1>你好，陈静</h1><table><tr><th>商品</th><th>数量</th></tr>"
    "<tr><td>抹茶</td><td>2</td></tr></table>"
    "<img src='http://192.0.2.1/pixel.png'><script>document.title='ran'</script>"
)


def order(subject: str = "「注文確認」 #1", attachments: Sequence[Attachment] = ()) -> Message:
    return Message(
        sender=SENDER,
        to="陈静 <chen@example.com>",
        subject=subject,
        text="你好，陈静: 抹茶 x2",
        html=CJK_HTML,
        attachments=attachments,
    )


async def test_api_lists_mail_sent_over_smtp_newest_first(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        invoice = Attachment(filename="請求書.pdf", content=b"%PDF-1.4 fake")
        await send(server.smtp.url, order("first"), order("second", attachments=[invoice]))
        reply = await fetch(server.api)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json; charset=utf-8"
    listing = reply.json()
    assert listing["total"] == 2
    second, first = listing["messages"]
    assert (second["subject"], first["subject"]) == ("second", "first")
    assert second["id"] > first["id"]
    assert second["from"] == SENDER
    assert second["to"] == ["陈静 <chen@example.com>"]
    assert (second["attachments"], first["attachments"]) == (1, 0)
    assert second["size"] > first["size"] > 0
    assert re.match(r"\d{4}-\d\d-\d\dT", second["date"])


async def test_api_details_raw_and_attachment_of_a_cjk_message(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        invoice = Attachment(filename="請求書.pdf", content=b"%PDF-1.4 fake")
        await send(server.smtp.url, order(attachments=[invoice]))
        [listed] = (await fetch(server.api)).json()["messages"]
        detail = (await fetch(f"{server.api}/{listed['id']}")).json()
        raw = await fetch(detail["raw_url"].join([server.web.url.rstrip("/"), ""]))
        download = await fetch(server.web.url.rstrip("/") + detail["attachments"][0]["url"])
        missing = await fetch(f"{server.api}/999")
    assert detail["subject"] == "「注文確認」 #1"
    assert detail["text"].strip() == "你好，陈静: 抹茶 x2"
    assert detail["html"].strip() == CJK_HTML
    assert ["Subject", "「注文確認」 #1"] in detail["headers"]
    assert detail["envelope"] == {"from": "shop@example.com", "to": ["chen@example.com"]}
    assert detail["attachments"][0]["filename"] == "請求書.pdf"
    assert raw.status == 200
    assert raw.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert b"Subject: =?utf-8?" in raw.body
    assert download.body == b"%PDF-1.4 fake"
    assert download.headers["Content-Type"] == "application/pdf"
    disposition = download.headers["Content-Disposition"]
    assert disposition == "attachment; filename*=UTF-8''%E8%AB%8B%E6%B1%82%E6%9B%B8.pdf"
    assert missing.status == 404


async def test_message_page_shows_a_script_subject_as_text(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        hostile = '<script>alert("x")</script> & <b>bold</b>'
        await send(server.smtp.url, order(hostile))
        [listed] = (await fetch(server.api)).json()["messages"]
        page = await fetch(f"{server.web.url}messages/{listed['id']}")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<h1 id=subject>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in (
        page.text
    )
    assert "<script>alert" not in page.text
    assert "<b>bold" not in page.text
    assert "陈静" in page.text  # the text part, in UTF-8
    assert "<h1>你好" not in page.text  # the HTML part only ever goes in the iframe


async def test_html_part_is_framed_sandboxed_under_a_csp_that_blocks_remote_content(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as server:
        await send(server.smtp.url, order())
        [listed] = (await fetch(server.api)).json()["messages"]
        page = await fetch(f"{server.web.url}messages/{listed['id']}")
        part = await fetch(f"{server.web.url}messages/{listed['id']}/html")
    [iframe] = re.findall(r"<iframe[^>]*>", page.text)
    assert re.search(r"\ssandbox[\s>]", iframe)
    assert "allow-" not in iframe
    assert f'src="/messages/{listed["id"]}/html"' in iframe
    assert part.headers["Content-Type"] == "text/html; charset=utf-8"
    assert part.headers["X-Content-Type-Options"] == "nosniff"
    policy = [p.strip() for p in part.headers["Content-Security-Policy"].split(";")]
    assert "default-src 'none'" in policy
    assert "sandbox" in policy
    assert "img-src data: 'self'" in policy  # no http(s) images: no tracking pixels
    assert not any("script-src" in p for p in policy)
    assert part.text.strip() == CJK_HTML
    page_policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in page_policy
    assert "frame-ancestors 'none'" in page_policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"


async def test_event_stream_announces_a_message_sent_after_it_opened(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        host = f"127.0.0.1:{server.web.port}"
        async with await anyio.connect_tcp("127.0.0.1", server.web.port) as stream:
            await stream.send(f"GET /api/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            received = b""
            with anyio.fail_after(10):
                while b"data: 0\n\n" not in received:
                    received += await stream.receive()
                assert b"Content-Type: text/event-stream; charset=utf-8" in received
                await send(server.smtp.url, order())
                while b"data: 1\n\n" not in received:
                    received += await stream.receive()
    assert received.endswith(b"event: messages\ndata: 1\n\n")


async def test_preview_keeps_the_newest_max_messages_and_the_maildir_keeps_all(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, max_messages=2) as server:
        await send(server.smtp.url, *(order(f"n{i}") for i in range(3)))
        listing = (await fetch(server.api)).json()
    assert [m["subject"] for m in listing["messages"]] == ["n2", "n1"]
    assert len(mailbox.Maildir(server.maildir)) == 3


async def test_delete_empties_the_preview_but_not_the_maildir(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        await send(server.smtp.url, order())
        deleted = await fetch(server.api, "DELETE")
        listing = (await fetch(server.api)).json()
    assert deleted.json() == {"deleted": 1}
    assert listing == {"total": 0, "messages": []}
    assert len(mailbox.Maildir(server.maildir)) == 1


async def test_auth_is_required_when_asked_and_the_preview_shows_who_sent(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, auth=("dev", "s3cret")) as server:
        port = server.smtp.port
        with pytest.raises(DeliveryError):
            await send(f"smtp://127.0.0.1:{port}?tls=none", order("anonymous"))
        url = f"smtp://dev:s3cret@127.0.0.1:{port}?tls=none&allow_plaintext_auth=true"
        await send(url, order("authenticated"))
        [listed] = (await fetch(server.api)).json()["messages"]
        detail = (await fetch(f"{server.api}/{listed['id']}")).json()
    assert detail["subject"] == "authenticated"
    assert detail["authenticated_as"] == "dev"


async def test_tls_mail_comes_over_starttls_verified_with_the_printed_ca(tmp_path: Path) -> None:
    async with running(tmp_path, auth=("dev", "s3cret"), tls=True) as server:
        ca_file = server.smtp.ca_file
        await send(f"smtp://dev:s3cret@127.0.0.1:{server.smtp.port}?ca_file={ca_file}", order())
        [listed] = (await fetch(server.api)).json()["messages"]
        detail = (await fetch(f"{server.api}/{listed['id']}")).json()
    assert detail["tls"] is True
    assert detail["authenticated_as"] == "dev"


async def test_requests_naming_another_host_or_too_large_or_unknown_are_refused(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as server:
        rebound = await fetch(server.api, headers={"Host": f"evil.example:{server.web.port}"})
        huge = await fetch(server.api, headers={"X-Filler": "x" * 20_000})
        post = await fetch(server.api, "PUT")
        unknown = await fetch(f"{server.web.url}nothing/here")
        index = await fetch(server.web.url)
        script = await fetch(f"{server.web.url}static/app.js")
    assert rebound.status == 421
    assert huge.status == 431
    assert post.status == 405
    assert unknown.status == 404
    assert index.status == 200
    assert index.headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<meta charset="utf-8">' in index.text
    assert "textContent" in script.text
    assert "innerHTML" not in script.text  # message values never become markup


# --- the command ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8025", ("127.0.0.1", 8025)),
        ("8025", ("127.0.0.1", 8025)),
        ("[::1]:0", ("::1", 0)),
    ],
)
def test_web_address_forms(value: str, expected: tuple[str, int]) -> None:
    assert parse_web_address(value) == expected


@pytest.mark.parametrize("value", ["localhost", ":80", "127.0.0.1:99999", "a:b"])
def test_bad_web_address_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_web_address(value)


def test_bad_auth_option_is_a_usage_error_that_does_not_echo_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["serve", "--auth", "nopassword-s3cret", "--maildir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "USER:PASSWORD" in result.output
    assert "s3cret" not in result.output


def test_serve_on_a_busy_web_port_says_so_in_one_line_without_a_traceback(
    tmp_path: Path,
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["serve", "--port", "0", "--web", f"127.0.0.1:{port}", "--maildir", str(tmp_path)]
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_serve_web_with_auth_and_tls_prints_the_ca_and_shows_the_mail(tmp_path: Path) -> None:
    """The whole command as a process: STARTTLS verified with the printed CA, AUTH, the API."""
    code = "from asyncmail.cli import main; main()"
    args = ["serve", "--port", "0", "--web", "127.0.0.1:0", "--maildir", str(tmp_path / "md")]
    args += ["--auth", "dev:s3cret", "--tls"]
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(4)]
    try:
        smtp_port = int(re.search(r"smtp://127\.0\.0\.1:(\d+)", lines[0]).group(1))  # type: ignore[union-attr]
        ca_file = re.search(r"its CA \(for clients to verify it\): (\S+)", lines[1]).group(1)  # type: ignore[union-attr]
        web = re.search(r"web preview on (http://\S+)", lines[3]).group(1)  # type: ignore[union-attr]
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = "a@example.com", "b@example.com", "你好"
        mail.set_content("body")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
            client.starttls(context=ssl.create_default_context(cafile=ca_file))
            client.login("dev", "s3cret")
            client.send_message(mail)
        received = ""
        while not received.startswith("received"):  # aiosmtpd may warn on stderr first
            received = process.stdout.readline()
        listing = request(f"{web}api/messages", "GET", {}).json()
    finally:
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=10)[0]
    output = "".join(lines) + received + rest
    assert process.returncode == 130  # Ctrl-C
    assert "AUTH required: user 'dev'" in lines[2]
    assert "s3cret" not in output
    assert received.startswith("received from=a@example.com to=b@example.com")
    assert [m["subject"] for m in listing["messages"]] == ["你好"]
    assert "Traceback" not in output


async def test_inline_images_of_the_message_itself_are_served_to_its_html(tmp_path: Path) -> None:
    logo = Attachment(
        filename="logo.png", content=b"\x89PNG fake", inline=True, content_id="logo@shop.example"
    )
    message = Message(
        sender=SENDER,
        to="chen@example.com",
        subject="logo",
        html='<img src="cid:logo@shop.example"><img src="cid:missing@x">',
        attachments=[logo],
    )
    async with running(tmp_path) as server:
        await send(server.smtp.url, message)
        [listed] = (await fetch(server.api)).json()["messages"]
        part = await fetch(f"{server.web.url}messages/{listed['id']}/html")
        image = await fetch(f"{server.api}/{listed['id']}/cid/logo@shop.example")
        missing = await fetch(f"{server.api}/{listed['id']}/cid/missing@x")
    assert f'<img src="/api/messages/{listed["id"]}/cid/logo@shop.example">' in part.text
    assert "img-src data: 'self'" in part.headers["Content-Security-Policy"]
    assert image.body == b"\x89PNG fake"
    assert image.headers["Content-Type"] == "image/png"
    assert image.headers["Content-Disposition"] == "inline"
    assert missing.status == 404


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_give_a_summary_details_and_an_escaped_page(data: bytes) -> None:
    """A broken message is still listed and shown; nothing from it reaches the page as markup."""
    store = MessageStore()
    stored = store.add(b"Subject: <script>x</script>\r\n" + data)
    parsed = details(parse(stored.data))
    page = message_page(stored)
    json.dumps(listing(stored))
    assert parsed.headers[0][0] == "Subject"
    assert "<script>x" not in page
    assert page.count("<script") == 1  # the page's own app.js


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /api/messages/7 HTTP/1.1\r\nHost: h:1", ("GET", ("api", "messages", "7"))),
        (b"HEAD /?x=1 HTTP/1.0", ("HEAD", ())),
        (b"DELETE http://h:1/api/messages HTTP/1.1", ("DELETE", ("api", "messages"))),
        (
            b"GET /api/messages/1/cid/a%40b HTTP/1.1",
            ("GET", ("api", "messages", "1", "cid", "a@b")),
        ),
        (b"GET / HTTP/1.1 extra", HTTPStatus.BAD_REQUEST),
        (b"GET /", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/2", HTTPStatus.HTTP_VERSION_NOT_SUPPORTED),
        (b"GET / HTTP/1.1\r\nno colon", HTTPStatus.BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nHost : h", HTTPStatus.BAD_REQUEST),  # a space before the colon
        (b"POST / HTTP/1.1", HTTPStatus.METHOD_NOT_ALLOWED),
        (b"GET / HTTP/1.1\r\nContent-Length: 5", HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked", HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
        (b"GET * HTTP/1.1", HTTPStatus.BAD_REQUEST),
    ],
)
def test_request_heads_are_parsed_or_refused(
    head: bytes, expected: tuple[str, tuple[str, ...]] | HTTPStatus
) -> None:
    parsed = parse_request(head)
    if isinstance(expected, HTTPStatus):
        assert parsed == expected
    else:
        assert isinstance(parsed, Request)
        assert (parsed.method, parsed.path) == expected


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.0.2.1", False),
        ("example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_preview_on_ipv6_loopback_answers_its_own_address(tmp_path: Path) -> None:
    store = MessageStore()
    store.add(b"Subject: hi\r\n\r\nbody\r\n")
    async with PreviewServer(store, host="::1") as web:
        reply = await fetch(f"{web.url}api/messages")
    assert web.url == f"http://[::1]:{web.port}/"
    assert [m["subject"] for m in reply.json()["messages"]] == ["hi"]


def test_store_needs_room_for_one_message() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MessageStore(max_messages=0)
