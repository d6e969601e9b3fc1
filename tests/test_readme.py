"""The README's examples (and the deliverability guide's) do what they say, against a real
capture server. tests/test_doc_examples.py runs and type-checks every example; these check
what they print and send."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest

from asyncmail.testing import CaptureServer, Fault

README = Path(__file__).resolve().parent.parent / "README.md"
DELIVERABILITY = README.parent / "docs" / "deliverability.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def _block(containing: str) -> str:
    [block] = [b for b in _python_blocks() if containing in b]
    return block


def test_readme_starts_with_the_install_demo_command_and_the_test_command() -> None:
    commands = re.findall(r"```bash\n(.*?)\n```", README.read_text(encoding="utf-8"), re.S)
    assert commands[0] == "python3 -m pip install -e '.[cli]' && asyncmail demo"
    assert commands[1] == "python3 -m pip install --group test --group dev -e . && scripts/check"
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci


def test_message_example_builds_its_bytes() -> None:
    namespace: dict[str, Any] = {}
    exec(_block("raw = msg.to_bytes()"), namespace)
    assert namespace["raw"].startswith(b"From: ")
    assert b"audit@example.com" not in namespace["raw"]


def test_web_app_example_sends_from_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    with CaptureServer().run_in_thread() as server:
        monkeypatch.setenv("ASYNCMAIL_URL", server.url)
        namespace: dict[str, Any] = {"__name__": "readme_app"}
        exec(_block("mailer.send(message)"), namespace)
        with TestClient(namespace["app"]) as client:
            reply = client.post("/reset-password", params={"email": "bob@example.org"})
            again = client.post("/reset-password", params={"email": "carol@example.org"})
        assert reply.status_code == 200
        assert reply.json()["status"] == "delivered"
        assert again.json()["status"] == "delivered"
        server.wait_for_messages_sync(2)
        assert [m.recipients for m in server.messages] == [
            ("bob@example.org",),
            ("carol@example.org",),
        ]
        assert server.connections_opened == 1  # the second request used the warm pool


def test_web_app_example_answers_422_for_an_invalid_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastapi.testclient import TestClient

    with CaptureServer().run_in_thread() as server:
        monkeypatch.setenv("ASYNCMAIL_URL", server.url)
        namespace: dict[str, Any] = {"__name__": "readme_app"}
        exec(_block("mailer.send(message)"), namespace)
        with TestClient(namespace["app"]) as client:
            reply = client.post("/reset-password", params={"email": "not an address"})
        assert reply.status_code == 422
        assert "address" in reply.json()["detail"]
        assert server.messages == []


def test_web_app_example_reports_the_servers_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    refusal = Fault.reply("rcpt", 550, "5.1.1 no such user")
    with CaptureServer(faults=[refusal]).run_in_thread() as server:
        monkeypatch.setenv("ASYNCMAIL_URL", server.url)
        namespace: dict[str, Any] = {"__name__": "readme_app"}
        exec(_block("mailer.send(message)"), namespace)
        with TestClient(namespace["app"]) as client:
            reply = client.post("/reset-password", params={"email": "gone@example.org"})
    assert reply.status_code == 200
    assert reply.json() == {"status": "failed", "reason": "550 5.1.1 no such user"}


def test_web_app_example_answers_503_when_no_server_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection-level failure has no SMTP code: the app says the mail server is down."""
    from fastapi.testclient import TestClient

    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("ASYNCMAIL_URL", f"smtp://127.0.0.1:{port}?tls=none")
    namespace: dict[str, Any] = {"__name__": "readme_app"}
    exec(_block("mailer.send(message)"), namespace)
    with TestClient(namespace["app"]) as client:
        reply = client.post("/reset-password", params={"email": "bob@example.org"})
    assert reply.status_code == 503
    assert reply.json() == {"detail": "mail server unavailable"}


def test_starlette_example_in_the_web_apps_guide_sends_from_a_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from starlette.testclient import TestClient

    guide = (README.parent / "docs" / "web-apps.md").read_text(encoding="utf-8")
    [block] = [b for b in re.findall(r"```python\n(.*?)```", guide, re.S) if "Starlette(" in b]
    with CaptureServer().run_in_thread() as server:
        monkeypatch.setenv("ASYNCMAIL_URL", server.url)
        namespace: dict[str, Any] = {"__name__": "guide_starlette"}
        exec(block, namespace)
        with TestClient(namespace["app"]) as client:
            sent = client.post("/welcome", params={"email": "ann@example.org"})
            bad = client.post("/welcome", params={"email": "no address"})
        assert sent.json() == {"status": "delivered"}
        assert bad.status_code == 422
        assert [m.recipients for m in server.messages] == [("ann@example.org",)]


def test_outbox_web_app_example_delivers_after_the_request_returned(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import time

    from fastapi.testclient import TestClient

    block = _block("outbox.enqueue(message")
    assert "sqlite:////var/lib/shop/mail.db" in block
    block = block.replace("/var/lib/shop/mail.db", str(tmp_path / "mail.db"))
    with CaptureServer().run_in_thread() as server:
        monkeypatch.setenv("ASYNCMAIL_URL", server.url)
        namespace: dict[str, Any] = {"__name__": "readme_outbox"}
        exec(block, namespace)
        with TestClient(namespace["app"]) as client:
            params = {"email": "bob@example.org", "token": "t1"}
            first = client.post("/reset-password", params=params)
            again = client.post("/reset-password", params=params)
            assert first.json()["state"] == "queued"
            # the same key: stored once, and the answer is the first message's state
            assert again.json()["message_id"] == first.json()["message_id"]
            deadline = time.monotonic() + 10
            while client.get("/mail/reset:t1").json()["state"] != "delivered":
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert [m.recipients for m in server.messages] == [("bob@example.org",)]


def test_batch_example_sends_every_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with CaptureServer().run_in_thread() as server:
        monkeypatch.setenv("ASYNCMAIL_URL", server.url)
        exec(_block("send_many(newsletter("), {"__name__": "readme_batch"})
        assert len(server.messages) == 100
    assert "{'delivered': 100, 'failed': 0, 'unknown': 0}" in capsys.readouterr().out


def test_testing_example_is_the_one_run_in_a_user_project() -> None:
    """tests/test_testing_server.py runs tests/fixtures/readme_testing.py in strict mode."""
    fixture = Path(__file__).parent / "fixtures" / "readme_testing.py"
    assert _block("async def test_welcome_mail_in_memory") == fixture.read_text(encoding="utf-8")


def _deliverability_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DELIVERABILITY.read_text(encoding="utf-8"), re.S)


def test_deliverability_examples_that_need_no_server_run_as_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/deliverability.md's list-header, VERP, DSN and bounce-parsing examples, in order."""
    blocks = _deliverability_blocks()
    markers = (
        'print(msg.to_bytes().decode().split("MIME-Version")[0])',
        'return_path="bounces@example.com"',
        "from asyncmail.bounces import verp_decode",
        "dsn = DSN(",
        "bounce = parse(raw, verp=",
    )
    namespace: dict[str, Any] = {}
    for marker in markers:
        [block] = [b for b in blocks if marker in b]
        exec(block, namespace)
    printed = capsys.readouterr().out
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in printed
    assert "dsn <order-42@example.com>" in printed
    assert "bob@example.org failed 5.1.1 True" in printed
    decode = namespace["verp_decode"]
    assert decode(
        "bounces+{local}={domain}@example.com", "bounces+alice=example.org@example.com"
    ) == ("alice@example.org")
