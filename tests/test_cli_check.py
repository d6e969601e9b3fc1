"""``asyncmail check URL``, end to end against a real capture server (in a thread)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from asyncmail.cli._app import cli
from asyncmail.testing import CaptureServer, Fault

PASSWORD = "s3cret-Pa55"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def relay() -> Iterator[CaptureServer]:
    capture = CaptureServer(tls="starttls", auth={"user": PASSWORD})
    with capture.run_in_thread() as running:
        yield running


def starttls_url(relay: CaptureServer, password: str) -> str:
    return f"smtp://user:{password}@127.0.0.1:{relay.port}?tls=starttls&ca_file={relay.ca_file}"


def auth_commands(server: CaptureServer) -> list[str]:
    return [c for s in server.sessions for c in s.commands if c.upper().startswith("AUTH")]


def test_check_prints_each_step_in_order_and_quits(relay: CaptureServer) -> None:
    code, output = invoke("check", starttls_url(relay, PASSWORD))
    assert code == 0, output
    steps = [line.split(":", 1)[0] for line in output.splitlines()]
    assert steps == ["server", "greeting", "EHLO", "EHLO", "TLS", "certificate", "AUTH"]
    lines = output.splitlines()
    assert lines[1].startswith("greeting: 220 ")
    assert "STARTTLS" in lines[2] and lines[2].endswith("(before STARTTLS)")
    assert re.fullmatch(r"TLS: TLSv1\.[23], cipher \S+ \(\d+ bits\)", lines[4])
    assert lines[5].startswith("certificate: subject ") and "expires" in lines[5]
    assert lines[6] == "AUTH: ok as user (PLAIN)"
    [session] = relay.sessions
    assert session.authenticated_as == "user"
    assert session.commands[-1] == "QUIT"
    assert PASSWORD not in output


def test_check_with_a_wrong_password_tries_auth_exactly_once(relay: CaptureServer) -> None:
    """One wrong password is one failure on the account's lockout counter, not three."""
    code, output = invoke("check", starttls_url(relay, f"wrong-{PASSWORD}"))
    assert code == 1, output
    assert len(auth_commands(relay)) == 1, relay.sessions[0].commands
    [line] = [line for line in output.splitlines() if line.startswith("AUTH")]
    assert re.fullmatch(r"AUTH: FAILED as user: 535 .* \(phase=auth, retryable=False\)", line)
    assert "Error" not in output and "Traceback" not in output  # no exception class names
    assert PASSWORD not in output


def test_check_fails_clearly_when_required_starttls_is_not_offered() -> None:
    with CaptureServer(auth={"user": PASSWORD}).run_in_thread() as plain:
        url = f"smtp://user:{PASSWORD}@127.0.0.1:{plain.port}?tls=starttls"
        code, output = invoke("check", url)
        commands = [c for s in plain.sessions for c in s.commands]
    assert code == 1, output
    last = output.splitlines()[-1]
    assert last.startswith("TLS: FAILED: ")
    assert "did not offer STARTTLS, which is required" in last
    assert "phase=starttls" in last
    assert not [c for c in commands if c.upper().startswith("AUTH")]
    assert PASSWORD not in output


def test_check_of_a_plaintext_server_says_so(relay: CaptureServer) -> None:
    with CaptureServer().run_in_thread() as plain:
        code, output = invoke("check", plain.url)
    assert code == 0, output
    assert "TLS: none (plaintext connection)" in output
    assert "AUTH: not tried (the URL has no user)" in output


def test_check_refuses_to_send_a_password_over_plaintext() -> None:
    capture = CaptureServer(auth={"user": PASSWORD}, auth_require_tls=False)
    with capture.run_in_thread() as plain:
        url = f"smtp://user:{PASSWORD}@127.0.0.1:{plain.port}?tls=none"
        code, output = invoke("check", url)
        sent = auth_commands(plain)
    assert code == 1, output
    assert output.splitlines()[-1].startswith("AUTH: FAILED as user: refusing to send credentials")
    assert sent == []
    assert PASSWORD not in output


def test_check_over_implicit_tls_shows_the_certificate() -> None:
    with CaptureServer(tls="implicit").run_in_thread() as relay:
        code, output = invoke("check", f"{relay.url}?ca_file={relay.ca_file}")
    assert code == 0, output
    assert output.splitlines()[0] == f"server: implicit://127.0.0.1:{relay.port}"
    assert "TLS: TLSv1." in output
    assert "certificate: subject" in output


def test_check_of_an_untrusted_certificate_fails_at_tls() -> None:
    with CaptureServer(tls="implicit").run_in_thread() as relay:
        code, output = invoke("check", relay.url)  # (no ca_file: the test CA is not trusted)
    assert code == 1, output
    assert output.splitlines()[-2].startswith("TLS: FAILED: TLS failed: ")
    assert "CERTIFICATE_VERIFY_FAILED" in output
    assert output.splitlines()[-1].startswith("hint: the certificate of 127.0.0.1:")


def test_check_of_an_implicit_tls_port_with_smtp_says_to_use_smtps() -> None:
    with CaptureServer(tls="implicit").run_in_thread() as relay:
        url = f"smtp://127.0.0.1:{relay.port}?tls=starttls"
        code, output = invoke("check", url, "--timeout", "1")
    assert code == 1, output
    assert output.splitlines()[-1].startswith("TLS: FAILED: ")
    assert "this looks like TLS: use smtps://" in output


def test_check_of_a_server_that_refuses_at_greeting_shows_the_reply() -> None:
    faults = [Fault.reply("greeting", 554, "5.3.2 no service here")]
    with CaptureServer(faults=faults).run_in_thread() as relay:
        code, output = invoke("check", relay.url)
    assert code == 1, output
    assert output.splitlines()[-1] == (
        "greeting: FAILED: 554 5.3.2 no service here (phase=greeting, retryable=False)"
    )


def test_check_of_a_closed_port_fails_at_connect() -> None:
    with CaptureServer().run_in_thread() as gone:
        url = gone.url  # a port that was just in use and is closed now
    code, output = invoke("check", url, "--timeout", "5")
    assert code == 1, output
    assert output.splitlines()[-2].startswith("connection: FAILED: cannot connect to 127.0.0.1:")
    assert "phase=connect, retryable=True" in output
    assert output.splitlines()[-1].startswith("hint: nothing accepts connections at 127.0.0.1:")
