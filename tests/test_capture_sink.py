"""CaptureServer as a long-running sink: a chosen port, a per-message callback, nothing kept."""

from __future__ import annotations

import errno
import mailbox
import os
import socket
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from asyncmail.cli._serve import cannot_listen, maildir_server
from asyncmail.testing import CapturedMessage, CaptureServer


def make_message(subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "alice@example.com"
    message["To"] = "bob@example.com"
    message["Subject"] = subject
    message.set_content("Hi Bob\n")
    return message


async def send(server: CaptureServer, subject: str) -> None:
    await aiosmtplib.send(make_message(subject), hostname=server.host, port=server.port)


async def test_on_message_gets_each_message_and_record_false_keeps_none() -> None:
    seen: list[CapturedMessage] = []
    async with CaptureServer(record=False, on_message=seen.append) as server:
        await send(server, "one")
        await send(server, "two")
        stats = server.statistics()
        assert server.messages == []
        assert server.sessions == []
        with pytest.raises(RuntimeError, match="record=False"):
            await server.wait_for_messages(1)
    assert [m.parsed["Subject"] for m in seen] == ["one", "two"]
    assert seen[0].recipients == ("bob@example.com",)
    assert (stats.messages, stats.connections_opened) == (2, 2)


async def test_on_message_runs_before_the_client_is_answered_when_recording_too() -> None:
    """The callback sees the message before the sender's send() returns."""
    seen: list[str] = []
    async with CaptureServer(on_message=lambda m: seen.append(m.parsed["Subject"])) as server:
        await send(server, "first")
        assert seen == ["first"]
        assert [m.parsed["Subject"] for m in server.messages] == ["first"]


async def test_a_failing_sink_refuses_the_message_and_records_nothing() -> None:
    def full_disk(message: CapturedMessage) -> None:
        raise OSError(28, "No space left on device")

    async with CaptureServer(on_message=full_disk) as server:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await send(server, "lost")
        assert refused.value.code == 500
        assert server.messages == []
        assert server.statistics().messages == 0


async def test_the_server_listens_on_the_port_it_is_given() -> None:
    async with CaptureServer() as first:
        port = first.port  # free a moment ago; listening sockets reuse the address
    async with CaptureServer(host="127.0.0.1", port=port) as server:
        assert server.port == port
        assert server.url == f"smtp://127.0.0.1:{port}?tls=none"
        await send(server, "here")
        assert len(server.messages) == 1


def test_an_impossible_port_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="port must be between 0 and 65535"):
        CaptureServer(port=70000)


async def test_maildir_server_stores_each_message_as_a_file_and_keeps_none(
    tmp_path: Path,
) -> None:
    shown: list[tuple[str, str]] = []
    server = maildir_server(
        tmp_path / "md", on_stored=lambda m, h: shown.append((m.envelope_sender, h["Subject"]))
    )
    async with server:
        await send(server, "kept on disk")
        assert server.messages == []
        assert server.statistics().messages == 1
    [stored] = mailbox.Maildir(tmp_path / "md").values()
    assert stored["Subject"] == "kept on disk"
    [file] = (tmp_path / "md" / "new").iterdir()
    assert b"\r\n" not in file.read_bytes()  # local line ends, as Maildir readers expect
    assert shown == [("alice@example.com", "kept on disk")]


def test_why_serve_cannot_listen_is_one_plain_line() -> None:
    taken = OSError(errno.EADDRINUSE, "error while attempting to bind on address ...: in use")
    unknown_host = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert cannot_listen("127.0.0.1", 1025, taken) == (
        f"cannot listen on 127.0.0.1:1025: {os.strerror(errno.EADDRINUSE)}"
    )
    assert cannot_listen("mail.invalid", 25, unknown_host) == (
        "cannot listen on mail.invalid:25: Name or service not known"
    )
