"""SyncMailer: one warm Mailer in a background loop, shared by threads of synchronous code."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from asyncmail import (
    Mailer,
    MailerClosedError,
    Message,
    Phase,
    Rejected,
    RetryPolicy,
    SendResult,
    Status,
    SyncMailer,
    WrongEventLoopError,
)
from asyncmail.sync._mailer import MailerOptions
from asyncmail.testing import CaptureServer, Fault, MailOutbox, SentMessage

NO_RETRY = RetryPolicy(attempts=1)


def note(i: int, to: str | None = None) -> Message:
    return Message(
        sender="Shop <shop@example.com>",
        to=to or f"user{i}@example.net",
        subject=f"Note #{i} — ✓",
        text=f"Hello {i}",
    )


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("asyncmail-sync ")]


def test_threads_send_at_once_through_one_warm_pool() -> None:
    """8 threads × 25 messages: each captured exactly once, over at most max_connections."""
    with CaptureServer().run_in_thread() as server:
        with SyncMailer(server.url, max_connections=4) as mailer:

            def worker(t: int) -> list[SendResult[Message]]:
                return [mailer.send(note(t * 100 + i)) for i in range(25)]

            with ThreadPoolExecutor(8) as pool:
                results = [r for batch in pool.map(worker, range(8)) for r in batch]
            stats = mailer.statistics()
        server.wait_for_messages_sync(200)
        assert {r.status for r in results} == {Status.DELIVERED}
        sent = Counter(m.recipients for m in server.messages)
        expected = [(f"user{t * 100 + i}@example.net",) for t in range(8) for i in range(25)]
        assert sent == Counter(expected)
        assert 1 <= server.connections_opened <= 4  # the pool was reused, never outgrown
        assert server.max_concurrent_connections > 1  # the threads were served at once
        assert stats.delivered == 200


def test_a_refused_message_raises_the_mailers_typed_error_with_its_result() -> None:
    fault = Fault.reply("rcpt", 550, "5.1.1 No such user", match="nobody@")
    with CaptureServer(faults=[fault]).run_in_thread() as server:
        with SyncMailer(server.url, retry=NO_RETRY) as mailer:
            with pytest.raises(Rejected) as caught:
                mailer.send(note(1, to="nobody@example.net"))
            after = mailer.send(note(2))  # the SyncMailer serves the next message
    error = caught.value
    assert (error.code, error.enhanced_code, error.phase) == (550, "5.1.1", Phase.RCPT)
    assert error.result is not None
    assert error.result.status is Status.FAILED
    assert after.status is Status.DELIVERED
    assert [m.recipients for m in server.messages] == [("user2@example.net",)]


def test_send_many_returns_one_result_per_message_in_input_order() -> None:
    fault = Fault.reply("rcpt", 550, "5.1.1 No such user", match="nobody@")
    messages = [note(i) for i in range(10)]
    messages[3] = note(3, to="nobody@example.net")
    with CaptureServer(faults=[fault]).run_in_thread() as server:
        with SyncMailer(server.url, retry=NO_RETRY, max_connections=3) as mailer:
            results = mailer.send_many(iter(messages), concurrency=3)
    assert [r.message for r in results] == messages
    expected = [Status.FAILED if i == 3 else Status.DELIVERED for i in range(10)]
    assert [r.status for r in results] == expected
    assert isinstance(results[3].error, Rejected)
    assert len(server.messages) == 9


def test_send_raw_sends_existing_bytes_to_the_envelope_given() -> None:
    data = (
        b"From: News <news@example.com>\r\nTo: undisclosed-recipients:;\r\n"
        b"Subject: Hi\r\n\r\nBody\r\n"
    )
    with CaptureServer().run_in_thread() as server:
        with SyncMailer(server.url) as mailer:
            result = mailer.send_raw(
                data, sender="bounces@example.com", recipients=["a@example.org"]
            )
    assert result.status is Status.DELIVERED
    [captured] = server.messages
    assert captured.envelope_sender == "bounces@example.com"
    assert captured.recipients == ("a@example.org",)
    assert captured.data == data


def test_the_loop_starts_on_first_use_and_its_thread_ends_at_close() -> None:
    with CaptureServer().run_in_thread() as server:
        mailer = SyncMailer(server.url)
        assert repr(mailer).startswith("<SyncMailer new <Mailer none://127.0.0.1:")
        assert loop_threads() == []
        mailer.send(note(1))
        assert repr(mailer).startswith("<SyncMailer open <Mailer")
        [thread] = loop_threads()
        mailer.close()
        assert not thread.is_alive()
        assert loop_threads() == []
        assert repr(mailer).startswith("<SyncMailer closed <Mailer")
        server.wait_for_messages_sync(1)
        deadline = time.monotonic() + 5
        while "QUIT" not in server.sessions[0].commands and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.sessions[0].commands[-1] == "QUIT"  # the pool closed its connection


def test_close_lets_a_send_in_flight_in_another_thread_finish() -> None:
    with CaptureServer(faults=[Fault.delay("dot", 0.5)]).run_in_thread() as server:
        mailer = SyncMailer(server.url)
        with ThreadPoolExecutor(1) as pool:
            sending = pool.submit(mailer.send, note(1))
            deadline = time.monotonic() + 5
            while mailer.statistics().in_flight == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert mailer.statistics().in_flight == 1
            mailer.close()
            assert sending.result().status is Status.DELIVERED
        assert loop_threads() == []
    assert len(server.messages) == 1


def test_a_mailer_that_cannot_open_fails_the_first_send_and_leaves_no_thread() -> None:
    """Its Mailer was entered elsewhere already (a Mailer opens once): the error comes back."""
    mailer = SyncMailer("smtp://127.0.0.1:9?tls=none")
    asyncio.run(mailer.mailer.__aenter__())
    with pytest.raises(MailerClosedError, match="entered once"):
        mailer.send(note(1))
    assert loop_threads() == []
    with pytest.raises(MailerClosedError, match="SyncMailer is closed"):
        mailer.send(note(2))


def test_a_closed_sync_mailer_refuses_to_send() -> None:
    with CaptureServer().run_in_thread() as server:
        with SyncMailer(server.url) as mailer:
            mailer.send(note(1))
        with pytest.raises(MailerClosedError):
            mailer.send(note(2))
        with pytest.raises(MailerClosedError):
            mailer.send_many([note(3)])
        with pytest.raises(MailerClosedError):
            mailer.__enter__()
        mailer.close()  # closing again is harmless
    assert len(server.messages) == 1


def test_a_sync_mailer_never_used_closes_without_starting_a_thread() -> None:
    mailer = SyncMailer("smtp://127.0.0.1:9?tls=none")
    mailer.close()
    assert loop_threads() == []
    with pytest.raises(MailerClosedError):
        mailer.send(note(1))
    assert loop_threads() == []


async def test_send_inside_a_running_event_loop_raises_instead_of_blocking_it() -> None:
    with CaptureServer().run_in_thread() as server:
        with SyncMailer(server.url) as mailer:
            with pytest.raises(WrongEventLoopError, match=r"await mailer\.send"):
                mailer.send(note(1))
            with pytest.raises(WrongEventLoopError, match=r"await mailer\.send_many"):
                mailer.send_many([note(2)])
    assert server.messages == []


def test_repr_shows_the_state_and_counts_but_never_the_password() -> None:
    auth = {"mailuser": "s3cret-pw"}
    with CaptureServer(auth=auth, auth_require_tls=False).run_in_thread() as server:
        url = f"smtp://mailuser:s3cret-pw@127.0.0.1:{server.port}?tls=none&allow_plaintext_auth=1"
        with SyncMailer(url) as mailer:
            mailer.send(note(1))
            text = repr(mailer)
    assert "s3cret" not in text
    assert text.startswith("<SyncMailer open <Mailer none://mailuser@127.0.0.1:")
    assert " open " in text and "delivered=1" in text
    assert server.sessions[0].authenticated_as == "mailuser"


def test_a_local_backend_url_works_too(memory_outbox: MailOutbox[SentMessage]) -> None:
    """``memory://`` (no server): the messages land in asyncmail.testing.outbox."""
    with SyncMailer("memory://") as mailer:
        result = mailer.send(note(1))
        text = repr(mailer)
    assert result.status is Status.DELIVERED
    assert text.startswith("<SyncMailer open <Mailer memory://")
    assert [m.recipients for m in memory_outbox] == [("user1@example.net",)]


def test_mailer_options_name_every_keyword_argument_of_mailer() -> None:
    """SyncMailer passes Mailer's keyword arguments through: the TypedDict must not drift."""
    keywords = {
        name
        for name, p in inspect.signature(Mailer).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert set(MailerOptions.__annotations__) == keywords


def test_a_forgotten_sync_mailer_is_closed_at_exit() -> None:
    """The atexit hook closes a SyncMailer nobody closed: its connection says QUIT."""
    script = (
        "import sys\n"
        "from asyncmail import Message, SyncMailer\n"
        "mailer = SyncMailer(sys.argv[1])\n"
        "mailer.send(Message(sender='a@example.com', to='b@example.org', subject='s', text='t'))\n"
    )
    with CaptureServer().run_in_thread() as server:
        done = subprocess.run(
            [sys.executable, "-c", script, server.url], capture_output=True, timeout=30
        )
        assert done.returncode == 0, done.stderr.decode()
        assert done.stderr == b""
        server.wait_for_messages_sync(1)
        deadline = time.monotonic() + 5
        while "QUIT" not in server.sessions[0].commands and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.sessions[0].commands[-1] == "QUIT"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_a_forked_child_sends_through_its_own_loop_and_leaves_the_parents_pool_alone() -> None:
    """Prefork workers (Celery, gunicorn) inherit an open SyncMailer without its thread."""
    script = (
        "import os, sys\n"
        "from asyncmail import Message, SyncMailer\n"
        "mailer = SyncMailer(sys.argv[1])\n"
        "def note(who):\n"
        "    return Message(sender='a@example.com', to=f'{who}@example.org', text='t')\n"
        "mailer.send(note('parent'))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    mailer.send(note('child'))\n"
        "    mailer.close()\n"
        "    os._exit(0)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "mailer.send(note('parent-again'))\n"
        "mailer.close()\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    with CaptureServer().run_in_thread() as server:
        done = subprocess.run(
            [sys.executable, "-c", script, server.url], capture_output=True, timeout=30
        )
        assert done.returncode == 0, done.stderr.decode()
        server.wait_for_messages_sync(3)
    assert [m.recipients for m in server.messages] == [
        ("parent@example.org",),
        ("child@example.org",),
        ("parent-again@example.org",),
    ]
    assert server.connections_opened == 2  # the parent's own, reused; the child's
