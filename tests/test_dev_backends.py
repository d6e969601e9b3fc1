"""The backends without a socket: memory://, console://, file:///dir and null://.

Each goes through the Mailer's usual entry points (``send``, ``send_many``, an outbox's
workers) and gives the results SMTP would; the parsed accessors are checked on memory://
messages and on what a real CaptureServer captured.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import io
import re
import threading
from pathlib import Path

import anyio
import pytest

from asyncmail import (
    Address,
    Attachment,
    ConfigError,
    Mailer,
    MailerClosedError,
    Message,
    MessageError,
    Outbox,
    OutboxState,
    Relay,
    Server,
    Status,
    WrongEventLoopError,
)
from asyncmail.testing import CaptureServer, MailOutbox, SentMessage, outbox

from ._dkim import DOMAIN, ed25519_signer, verdicts
from ._support import mailer_for, message

CJK_SUBJECT = "订单确认 #7 — 日本語の件名"


def rich_message(**overrides: object) -> Message:
    """A message with everything the parsed accessors read: CJK, Cc, Bcc, Reply-To, a file."""
    fields: dict[str, object] = {
        "sender": "商店 <shop@example.com>",
        "to": ["张三 <zhang@example.net>"],
        "cc": ["cc@example.net"],
        "bcc": ["hidden@example.net"],
        "reply_to": ["help@example.com"],
        "subject": CJK_SUBJECT,
        "text": "Hello 张三\n.\nA lone dot above.",
        "html": "<p>Hello 张三</p>",
        "attachments": [Attachment(filename="报告.pdf", content=b"%PDF-1.4 \x00\xff")],
    }
    fields.update(overrides)
    return Message(**fields)  # type: ignore[arg-type]


def assert_rich(sent: SentMessage | object) -> None:
    """What ``rich_message`` reads back as, whatever recorded it."""
    from asyncmail.message._parsed import ParsedMail

    assert isinstance(sent, ParsedMail)
    assert sent.subject == CJK_SUBJECT
    assert sent.from_ == sent.sender == "shop@example.com"
    assert sent.to == ("zhang@example.net",)
    assert sent.cc == ("cc@example.net",)
    assert sent.bcc == ("hidden@example.net",)
    assert sent.reply_to == ("help@example.com",)
    assert sent.recipients == ("zhang@example.net", "cc@example.net", "hidden@example.net")
    assert sent.envelope_sender == "shop@example.com"
    assert sent.text is not None and "Hello 张三\n.\nA lone dot above." in sent.text
    assert sent.html is not None and "<p>Hello 张三</p>" in sent.html
    [attachment] = sent.attachments
    assert attachment.filename == "报告.pdf"
    assert attachment.content_type == "application/pdf"
    assert attachment.content == b"%PDF-1.4 \x00\xff"
    assert not attachment.inline
    assert b"hidden@example.net" not in sent.data  # Bcc: in the envelope, not the bytes
    assert sent.headers["message-id"] == sent.message_id
    assert sent.parsed is sent.parsed  # parsed once


# -- memory:// ---------------------------------------------------------------------------


async def test_memory_backend_keeps_parsed_messages_in_the_process_outbox() -> None:
    msg = rich_message()
    async with Mailer("memory://") as mailer:
        result = await mailer.send(msg)
    assert result.status is Status.DELIVERED
    assert result.accepted == ("zhang@example.net", "cc@example.net", "hidden@example.net")
    assert result.refused == {}
    assert result.relay == "memory://"
    assert result.message is msg
    outbox.assert_count(1)
    assert_rich(outbox.last)
    assert outbox.last.message_id == result.message_id == msg.message_id


async def test_memory_backend_through_send_many_gives_one_delivered_result_each() -> None:
    msgs = [message(i) for i in range(5)]
    async with Mailer("memory://") as mailer:
        results = [r async for r in mailer.send_many(msgs)]
        stats = mailer.statistics()
    assert [r.status for r in results] == [Status.DELIVERED] * 5
    assert {r.relay for r in results} == {"memory://"}
    assert [m.subject for m in outbox] == [f"订单确认 #{i}" for i in range(5)]
    assert (stats.delivered, stats.failed, stats.in_flight) == (5, 0, 0)
    assert stats.relays[0].relay == "memory://"
    assert stats.relays[0].delivered == 5


async def test_an_invalid_message_is_a_message_error_and_nothing_is_stored() -> None:
    bad = email.message.EmailMessage()
    bad["From"] = "a@example.com"  # no recipient
    async with Mailer("memory://") as mailer:
        with pytest.raises(MessageError):
            await mailer.send(bad)
        [result] = [r async for r in mailer.send_many([bad])]
        stats = mailer.statistics()
    assert result.status is Status.FAILED
    assert isinstance(result.error, MessageError)
    assert stats.failed == 1
    outbox.assert_count(0)


async def test_a_closed_memory_mailer_refuses_to_send() -> None:
    mailer = Mailer("memory://")
    async with mailer:
        pass
    with pytest.raises(MailerClosedError):
        await mailer.send(message())
    assert len(outbox) == 0


def test_a_memory_mailer_used_in_a_second_event_loop_raises_a_clear_error() -> None:
    mailer = Mailer("memory://")
    asyncio.run(mailer.__aenter__())
    with pytest.raises(WrongEventLoopError):
        asyncio.run(mailer.send(message()))
    assert len(outbox) == 0


async def test_dkim_signs_what_a_memory_mailer_keeps_through_send_and_send_many() -> None:
    signer = ed25519_signer()
    async with Mailer("memory://", dkim=signer) as mailer:
        await mailer.send(message(1, sender=f"shop@{DOMAIN}"))
        [result] = [r async for r in mailer.send_many([message(2, sender=f"shop@{DOMAIN}")])]
    assert result.status is Status.DELIVERED
    outbox.assert_count(2)
    for sent in outbox:
        assert sent.data.startswith(b"DKIM-Signature:")
        assert verdicts(sent.data, [signer]) == [(DOMAIN, signer.selector, True)]


async def test_verp_keeps_one_message_per_recipient_from_its_own_envelope_sender() -> None:
    msg = message(
        1, to=["a@example.net", "b@example.net"], return_path="bounce+{local}={domain}@example.com"
    )
    async with Mailer("memory://") as mailer:
        result = await mailer.send(msg)
    assert result.accepted == ("a@example.net", "b@example.net")
    assert [(m.envelope_sender, m.recipients) for m in outbox] == [
        ("bounce+a=example.net@example.com", ("a@example.net",)),
        ("bounce+b=example.net@example.com", ("b@example.net",)),
    ]


def test_memory_mailers_in_several_threads_all_land_in_the_outbox() -> None:
    async def send_some(n: int) -> None:
        async with Mailer("memory://") as mailer:
            for i in range(20):
                await mailer.send(message(n * 100 + i))

    threads = [threading.Thread(target=asyncio.run, args=(send_some(n),)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outbox.assert_count(80)
    assert len({m.message_id for m in outbox}) == 80


async def test_asyncmail_url_may_name_a_memory_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCMAIL_URL", "memory://")
    async with Mailer() as mailer:
        await mailer.send(message(3))
    with pytest.raises(ConfigError, match="a memory:// Mailer has no server"):
        _ = mailer.server
    assert "memory://" in repr(mailer)
    outbox.assert_sent(to="user3@example.net", subject="订单确认 #3")


@pytest.mark.parametrize("backend", ["memory", "console", "file", "null"])
async def test_an_outbox_delivers_through_a_local_mailer(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mail"
    url = f"file://{folder}" if backend == "file" else f"{backend}://"
    keys = [f"k{i}" for i in range(3)]
    async with Outbox(f"sqlite:///{tmp_path / 'o.db'}") as store:
        for i, key in enumerate(keys):
            await store.enqueue(message(i), key=key)
        async with Mailer(url) as mailer, store.deliver(mailer, concurrency=2):
            with anyio.fail_after(20):
                while True:
                    statuses = [await store.status(key) for key in keys]
                    if all(s is not None and s.final for s in statuses):
                        break
                    await anyio.sleep(0.02)
    assert [s.state if s else None for s in statuses] == [OutboxState.DELIVERED] * 3
    assert [s.accepted if s else None for s in statuses] == [
        (f"user{i}@example.net",) for i in range(3)
    ]
    subjects = sorted(f"订单确认 #{i}" for i in range(3))
    if backend == "memory":
        assert sorted(m.subject for m in outbox) == subjects
    else:
        assert len(outbox) == 0
    summaries = [line for line in capsys.readouterr().out.splitlines() if "console://" in line]
    assert len(summaries) == (3 if backend == "console" else 0)
    files = list(folder.glob("*.eml")) if backend == "file" else []
    assert len(files) == (3 if backend == "file" else 0)


# -- null://, console://, file:/// -------------------------------------------------------


async def test_null_backend_discards_but_counts_delivered() -> None:
    async with Mailer("null://") as mailer:
        result = await mailer.send(message())
        results = [r async for r in mailer.send_many([message(1), message(2)])]
        stats = mailer.statistics()
    assert result.status is Status.DELIVERED and result.relay == "null://"
    assert [r.status for r in results] == [Status.DELIVERED] * 2
    assert stats.delivered == 3
    assert len(outbox) == 0


async def test_console_backend_prints_a_summary_and_the_source(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with Mailer("console://") as mailer:
        result = await mailer.send(rich_message())
    out = capsys.readouterr().out
    assert result.relay == "console://"
    first = out.splitlines()[0]
    assert CJK_SUBJECT in first
    assert "shop@example.com" in first and "hidden@example.net" in first
    assert "Subject: =?utf-8?" in out
    assert "Content-Disposition: attachment" in out
    assert out.rstrip().endswith("end of message -----")
    assert len(outbox) == 0


async def test_file_backend_writes_eml_files_that_read_back(tmp_path: Path) -> None:
    folder = tmp_path / "made" / "here"
    async with Mailer(f"file://{folder}") as mailer:
        result = await mailer.send(rich_message())
        results = [r async for r in mailer.send_many([message(1), message(2)])]
    assert result.relay == f"file://{folder}"
    assert all(r.status is Status.DELIVERED for r in results)
    files = sorted(folder.iterdir())
    assert len(files) == 3
    assert all(f.suffix == ".eml" and not f.name.startswith(".") for f in files)
    parsed = [email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files]
    [rich] = [p for p in parsed if p["Subject"] == CJK_SUBJECT]
    [attachment] = list(rich.iter_attachments())
    assert attachment.get_filename() == "报告.pdf"
    assert attachment.get_content() == b"%PDF-1.4 \x00\xff"
    assert "Bcc" not in rich


async def test_file_backend_that_cannot_write_fails_the_message(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    async with Mailer(f"file://{blocker}") as mailer:
        [result] = [r async for r in mailer.send_many([message()])]
    assert result.status is Status.FAILED
    assert result.error is not None and "could not write" in str(result.error)
    assert result.refused.keys() == {"user0@example.net"}


async def test_a_relative_file_url_is_taken_from_the_working_directory_at_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    mailer = Mailer("file://./outgoing")
    monkeypatch.chdir(tmp_path.parent)
    async with mailer:
        result = await mailer.send(message())
    assert result.relay == f"file://{tmp_path / 'outgoing'}"
    assert len(list((tmp_path / "outgoing").glob("*.eml"))) == 1


async def test_a_console_that_cannot_be_written_fails_the_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr("sys.stdout", closed)
    async with Mailer("console://") as mailer:
        [result] = [r async for r in mailer.send_many([message()])]
    assert result.status is Status.FAILED
    assert result.error is not None and "could not print" in str(result.error)


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("memory://name", "takes nothing after"),
        ("null://x?y=1", "takes nothing after"),
        ("file://", "needs a directory"),
        ("file:///tmp/x?mode=1", "no options"),
    ],
)
def test_a_bad_local_url_is_a_config_error(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Mailer(url)


@pytest.mark.parametrize(
    "relays",
    [["memory://", "smtp://127.0.0.1:2525"], ["smtp://127.0.0.1:2525", "null://"]],
)
def test_a_local_backend_mixed_with_relays_is_a_config_error(relays: list[str]) -> None:
    with pytest.raises(ConfigError, match="cannot be mixed"):
        Mailer(relays)


def test_a_server_or_relay_names_the_local_backends_in_its_hint() -> None:
    with pytest.raises(ConfigError, match=r"Mailer\(\)"):
        Server.from_url("memory://")
    with pytest.raises(ConfigError, match=r"Mailer\(\)"):
        Relay("console://")
    with pytest.raises(ConfigError, match=r"memory://, console://, file:///path/to/dir"):
        Server.from_url("http://example.com")


# -- the parsed accessors on what a capture server captured ----------------------------------


async def test_captured_messages_read_back_like_memory_ones() -> None:
    async with CaptureServer() as server, mailer_for(server) as mailer:
        await mailer.send(rich_message())
    [captured] = server.messages
    assert_rich(captured)
    assert isinstance(server.messages, MailOutbox)
    assert server.messages.assert_sent(to="HIDDEN@example.net") is captured


# -- MailOutbox's assertions ---------------------------------------------------------------


async def test_outbox_assertions_find_and_return_the_matching_message() -> None:
    async with Mailer("memory://") as mailer:
        await mailer.send(message(1))
        await mailer.send(message(2, to=[Address("李四", "li@example.net")]))
    found = outbox.assert_sent(to="li@example.net", subject="订单确认 #2", contains="Hello 2")
    assert found is outbox.last
    assert outbox.assert_sent(subject=re.compile(r"#1$")) is outbox[0]
    assert outbox.find(sender="SHOP@example.com") == list(outbox)
    assert outbox.find(where=lambda m: "user1@example.net" in m.to) == [outbox[0]]
    outbox.assert_not_sent(to="nobody@example.net")
    outbox.clear()
    assert len(outbox) == 0


async def test_a_failed_outbox_assertion_lists_what_was_sent() -> None:
    async with Mailer("memory://") as mailer:
        await mailer.send(message(1))
        await mailer.send(message(2))
    listing = r"  1\. '订单确认 #1' from shop@example.com to user1@example.net.*2\. '订单确认 #2'"
    with pytest.raises(AssertionError, match=r"(?s)expected 3 messages sent, 2 were:\n" + listing):
        outbox.assert_count(3)
    with pytest.raises(AssertionError, match=r"no message was sent to x@example\.net; sent:"):
        outbox.assert_sent(to="x@example.net")
    with pytest.raises(AssertionError, match=r"with subject 'nope' containing 'Hello'"):
        outbox.assert_sent(subject="nope", contains="Hello")
    with pytest.raises(AssertionError, match=r"expected no message to user2@example\.net, but 1"):
        outbox.assert_not_sent(to="user2@example.net")


def test_an_empty_outbox_says_nothing_was_sent() -> None:
    with pytest.raises(AssertionError, match="expected 1 message sent, 0 were: none"):
        outbox.assert_count(1)
    with pytest.raises(AssertionError, match="no message was sent"):
        _ = outbox.last
