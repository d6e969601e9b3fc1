"""``asyncmail send``: bodies, headers, Reply-To, -v, and its failures worded as ``check``'s."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from asyncmail.cli._app import cli
from asyncmail.smtp._tap import client_lines, redacted_command
from asyncmail.testing import CaptureServer

PASSWORD = "s3cret-Pa55"
SENDER = "shop@example.com"


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer().run_in_thread() as running:
        yield running


def send(url: str, *args: str) -> tuple[int, str]:
    return invoke("send", "--url", url, "--from", SENDER, "--to", "ann@example.com", *args)


# --- bodies, headers, Reply-To ------------------------------------------------------------


def test_text_is_the_body_itself_and_at_file_reads_a_file(
    server: CaptureServer, tmp_path: Path
) -> None:
    (tmp_path / "page.html").write_text("<p>from a file</p>", encoding="utf-8")
    code, output = send(server.url, "--text", "inline words", "--html", f"@{tmp_path}/page.html")
    assert code == 0, output
    [message] = server.messages
    assert message.parsed.get_body(("plain",)).get_content().strip() == "inline words"  # type: ignore[union-attr]
    assert "<p>from a file</p>" in message.parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]


def test_text_file_and_html_file_read_files(server: CaptureServer, tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("plain from file", encoding="utf-8")
    code, output = send(server.url, "--text-file", str(tmp_path / "b.txt"))
    assert code == 0, output
    assert server.messages[0].parsed.get_content().strip() == "plain from file"


def test_text_naming_an_existing_file_is_refused_with_a_pointer_to_text_file(
    server: CaptureServer, tmp_path: Path
) -> None:
    """Earlier versions read --text as a file: sending its path as the body would surprise."""
    body = tmp_path / "b.txt"
    body.write_text("x", encoding="utf-8")
    code, output = send(server.url, "--text", str(body))
    assert code == 2
    assert f"use --text-file {body}" in output
    assert server.messages == []


def test_text_and_text_file_together_are_a_usage_error(
    server: CaptureServer, tmp_path: Path
) -> None:
    (tmp_path / "b.txt").write_text("x", encoding="utf-8")
    code, output = send(server.url, "--text", "a", "--text-file", str(tmp_path / "b.txt"))
    assert code == 2
    assert "give --text or --text-file, not both" in output


def test_header_and_reply_to_reach_the_message(server: CaptureServer) -> None:
    code, output = send(
        server.url,
        *("--text", "hi", "--header", "X-Campaign: spring", "--header", "X-Batch:  7 "),
        *("--reply-to", "Help <help@example.com>"),
    )
    assert code == 0, output
    parsed = server.messages[0].parsed
    assert parsed["X-Campaign"] == "spring"
    assert parsed["X-Batch"] == "7"
    assert parsed["Reply-To"] == "Help <help@example.com>"


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("X-Evil: a\r\nBcc: victim@example.com", "CR, LF and NUL are not allowed"),
        ("X-Evil: a\nBcc: victim@example.com", "CR, LF and NUL are not allowed"),
        ("no colon here", "write it as 'Name: value'"),
        ("Subject: twice", "asyncmail sets Subject itself"),
    ],
)
def test_a_bad_header_is_refused_before_connecting(
    server: CaptureServer, header: str, problem: str
) -> None:
    code, output = send(server.url, "--text", "hi", "--header", header)
    assert code == 2, output
    assert problem in output
    assert server.statistics().connections_opened == 0


# --- -v: the transcript -----------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["plain", "login"])
def test_verbose_prints_the_conversation_without_the_password_or_the_body(
    mechanism: str,
) -> None:
    capture = CaptureServer(tls="starttls", auth={"user": PASSWORD})
    with capture.run_in_thread() as relay:
        url = (
            f"smtp://user:{PASSWORD}@127.0.0.1:{relay.port}"
            f"?tls=starttls&ca_file={relay.ca_file}&auth={mechanism}"
        )
        code, output = send(url, "-v", "--text", "the secret body text")
    assert code == 0, output
    lines = output.splitlines()
    for expected in ("C: EHLO ", "C: STARTTLS", "C: MAIL FROM:<shop@example.com>"):
        assert any(line.startswith(expected) for line in lines), expected
    assert "C: RCPT TO:<ann@example.com>" in lines
    assert "C: DATA" in lines
    assert any(line.startswith("S: 220 ") for line in lines)  # the greeting
    assert any(line.startswith("S: 250 ") for line in lines)
    assert any(line.startswith("S: 354 ") for line in lines)
    assert f"C: AUTH {mechanism.upper()} ****" in lines
    assert any(re.fullmatch(r"C: \[\d+ bytes of message content\]", line) for line in lines)
    assert "C: QUIT" in lines
    secrets = [
        PASSWORD,
        base64.b64encode(f"\0user\0{PASSWORD}".encode()).decode(),
        base64.b64encode(PASSWORD.encode()).decode(),
        base64.b64encode(b"user").decode(),  # (AUTH LOGIN's user name line: hidden too)
    ]
    for secret in secrets:
        assert secret not in output
    assert "the secret body text" not in output


def test_without_verbose_there_is_no_transcript(server: CaptureServer) -> None:
    code, output = send(server.url, "--text", "hi")
    assert code == 0, output
    assert "C: " not in output and "S: " not in output


def test_transcript_lines_of_a_pipelined_write_and_bdat_chunks() -> None:
    group = b"MAIL FROM:<a@x.com>\r\nRCPT TO:<b@x.com>\r\nBDAT 5 LAST\r\nHELLO"
    assert list(client_lines(group)) == [
        "MAIL FROM:<a@x.com>",
        "RCPT TO:<b@x.com>",
        "BDAT 5 LAST",
        "[5 bytes of message content]",
    ]
    assert redacted_command((b"AUTH", b"PLAIN", b"AHVzZXIAcGFzcw=="), False) == "AUTH PLAIN ****"
    assert redacted_command((b"dXNlcg==",), True) == "****"


# --- check and send say the same about the same failure ---------------------------------


def _spawn(*args: str, env: dict[str, str] | None = None) -> str:
    code = "from asyncmail.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    return done.stdout + done.stderr


@contextlib.contextmanager
def _speaks_first(data: bytes) -> Iterator[int]:
    """A TCP listener that says ``data`` to each client at once: not an SMTP server."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(data)
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(1024)  # until the client goes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x46"
HTTP_REPLY = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"


def _auth_refused() -> contextlib.AbstractContextManager[str]:
    @contextlib.contextmanager
    def make() -> Iterator[str]:
        capture = CaptureServer(tls="starttls", auth={"user": PASSWORD})
        with capture.run_in_thread() as relay:
            yield (
                f"smtp://user:wrong-{PASSWORD}@127.0.0.1:{relay.port}"
                f"?tls=starttls&ca_file={relay.ca_file}"
            )

    return make()


def _no_starttls() -> contextlib.AbstractContextManager[str]:
    @contextlib.contextmanager
    def make() -> Iterator[str]:
        with CaptureServer(auth={"user": PASSWORD}).run_in_thread() as plain:
            yield f"smtp://user:{PASSWORD}@127.0.0.1:{plain.port}?tls=starttls"

    return make()


def _untrusted_certificate() -> contextlib.AbstractContextManager[str]:
    @contextlib.contextmanager
    def make() -> Iterator[str]:
        with CaptureServer(tls="implicit").run_in_thread() as relay:
            yield relay.url  # (no ca_file: the test CA is not trusted)

    return make()


def _plain_port_with_smtps() -> contextlib.AbstractContextManager[str]:
    @contextlib.contextmanager
    def make() -> Iterator[str]:
        with CaptureServer().run_in_thread() as plain:
            yield f"smtps://127.0.0.1:{plain.port}"

    return make()


def _closed_port() -> contextlib.AbstractContextManager[str]:
    @contextlib.contextmanager
    def make() -> Iterator[str]:
        with CaptureServer().run_in_thread() as gone:
            url = gone.url
        yield url  # a port that was just in use and is closed now

    return make()


def _listener(data: bytes) -> Callable[[], contextlib.AbstractContextManager[str]]:
    @contextlib.contextmanager
    def make() -> Iterator[str]:
        with _speaks_first(data) as port:
            yield f"smtp://127.0.0.1:{port}?tls=starttls"

    return make


FAILURES: list[tuple[str, Callable[[], contextlib.AbstractContextManager[str]], str, str]] = [
    (
        "auth refused",
        _auth_refused,
        r"AUTH: FAILED as user: 535 5\.7\.8 .* \(phase=auth, retryable=False\)",
        "hint: the server refused the user name or password",
    ),
    (
        "starttls missing",
        _no_starttls,
        r"TLS: FAILED: starttls://user@127\.0\.0\.1:\d+ did not offer STARTTLS, which is "
        r"required; .*\(phase=starttls, retryable=False\)",
        "",
    ),
    (
        "a TLS port with smtp://",
        _listener(TLS_ALERT),
        r"TLS: FAILED: the server answered in TLS, .*use smtps:// \(implicit TLS\) "
        r"\(phase=greeting, retryable=False\)",
        "",
    ),
    (
        "a plain SMTP port with smtps://",
        _plain_port_with_smtps,
        r"TLS: FAILED: TLS failed: the server did not answer in TLS; the server speaks plain "
        r"SMTP first: use smtp:// \(STARTTLS\), usually port 587 "
        r"\(phase=greeting, retryable=False\)",
        "",
    ),
    (
        "not an SMTP server",
        _listener(HTTP_REPLY),
        r"greeting: FAILED: this is not an SMTP server \(it answered 'HTTP/1\.1 400 Bad "
        r"Request'\) \(phase=greeting, retryable=False\)",
        "",
    ),
    (
        "connection refused",
        _closed_port,
        r"connection: FAILED: cannot connect to 127\.0\.0\.1:\d+: .* "
        r"\(phase=connect, retryable=True\)",
        "hint: nothing accepts connections at 127.0.0.1:",
    ),
    (
        "untrusted certificate",
        _untrusted_certificate,
        r"TLS: FAILED: TLS failed: .*CERTIFICATE_VERIFY_FAILED.* "
        r"\(phase=greeting, retryable=False\)",
        "hint: the certificate of 127.0.0.1:",
    ),
]


def _failure_lines(output: str) -> list[str]:
    lines = output.splitlines()
    [at] = [i for i, line in enumerate(lines) if ": FAILED" in line]
    return (
        lines[at : at + 2]
        if lines[at + 1 : at + 2] and lines[at + 1].startswith("hint:")
        else lines[at : at + 1]
    )


@pytest.mark.parametrize(
    ("make_server", "wording", "hint"),
    [failure[1:] for failure in FAILURES],
    ids=[failure[0] for failure in FAILURES],
)
def test_check_and_send_word_the_same_failure_the_same_way(
    make_server: Callable[[], contextlib.AbstractContextManager[str]], wording: str, hint: str
) -> None:
    with make_server() as url:
        checked = _spawn("check", url, "--timeout", "5")
        sent = _spawn(
            *("send", "--from", SENDER, "--to", "ann@example.com", "--text", "hi"),
            env={"ASYNCMAIL_URL": url},
        )
    for output in (checked, sent):
        assert "Traceback" not in output, output
        assert "aiosmtplib" not in output and not re.search(r"\bSMTP\w*(Error|Exception)", output)
        assert PASSWORD not in output
    assert _failure_lines(checked) == _failure_lines(sent), (checked, sent)
    lines = _failure_lines(sent)
    assert re.fullmatch(wording, lines[0]), lines[0]
    if hint:
        assert lines[1].startswith(hint), lines
    else:
        assert len(lines) == 1, lines


@pytest.mark.parametrize("name", ["send", "batch", "check", "demo"])
def test_every_option_says_what_it_does_in_help(name: str) -> None:
    command = cli.commands[name]
    undocumented = [
        param.name
        for param in command.params
        if isinstance(param, click.Option) and not param.help and param.name != "help"
    ]
    assert undocumented == []
    code, output = invoke(name, "--help")
    assert code == 0
    for param in command.params:
        if isinstance(param, click.Option):
            assert max(param.opts, key=len) in output
