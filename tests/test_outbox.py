"""The outbox end to end on its embedded default (SQLite), against a real capture server.

Each test enqueues through the public API, delivers through a Mailer, and asserts what the
server stored and what the outbox recorded.
"""

from __future__ import annotations

import email.message
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from asyncmail import (
    Address,
    ConfigError,
    Mailer,
    MailerClosedError,
    Message,
    MessageError,
    Outbox,
    OutboxError,
    OutboxState,
    OutboxStatus,
    RetryPolicy,
)
from asyncmail.outbox._model import Lease, Outcome
from asyncmail.outbox._sqlite import SQLiteStore
from asyncmail.testing import CaptureServer, Fault

from ._support import SHORT_TIMEOUTS, copies, mailer_for, message

#: Retries at once: the tests assert what is retried, not how long it waits.
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.0, jitter=False)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'outbox.db'}"


async def _wait_final(outbox: Outbox, keys: Sequence[str], limit: float = 20.0) -> None:
    with anyio.fail_after(limit):
        while True:
            statuses = [await outbox.status(k) for k in keys]
            if all(s is not None and s.final for s in statuses):
                return
            await anyio.sleep(0.02)


async def _eventually(
    outbox: Outbox, key: str, check: Callable[[OutboxStatus], bool], limit: float = 10.0
) -> OutboxStatus:
    with anyio.fail_after(limit):
        while True:
            status = await outbox.status(key)
            if status is not None and check(status):
                return status
            await anyio.sleep(0.02)


async def test_enqueue_stores_the_message_and_a_worker_delivers_it_once(url: str) -> None:
    msg = message(1)
    async with CaptureServer() as server, Outbox(url) as outbox:
        status = await outbox.enqueue(msg, key="reset:42")
        assert status.state is OutboxState.QUEUED
        assert status.message_id == msg.message_id
        async with mailer_for(server) as mailer, outbox.deliver(mailer, concurrency=2):
            await _wait_final(outbox, ["reset:42"])
        done = await outbox.status("reset:42")
        assert done is not None
        assert done.state is OutboxState.DELIVERED
        assert done.accepted == ("user1@example.net",)
        assert done.attempts == 1
        assert done.reply is not None and done.reply.startswith("250")
        assert copies(server, "user1@example.net") == 1
        assert server.messages[0].parsed["Message-ID"] == msg.message_id


async def test_a_second_enqueue_with_the_same_key_is_a_no_op_returning_the_first(
    url: str,
) -> None:
    async with CaptureServer() as server, Outbox(url) as outbox:
        first = await outbox.enqueue(message(1), key="k")
        again = await outbox.enqueue(message(2, subject="other"), key="k")
        assert again.message_id == first.message_id
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            await _wait_final(outbox, ["k"])
        after = await outbox.enqueue(message(3), key="k")
        assert after.state is OutboxState.DELIVERED
        stats = await outbox.statistics()
        assert sum(stats.counts.values()) == 1
        assert len(server.messages) == 1
        assert server.messages[0].parsed["Subject"] == message(1).subject


async def test_an_invalid_message_is_refused_at_enqueue_and_nothing_is_stored(url: str) -> None:
    stdlib = email.message.EmailMessage()
    stdlib["From"] = "shop@example.com"  # and no recipient at all
    async with Outbox(url) as outbox:
        with pytest.raises(MessageError):
            await outbox.enqueue(stdlib, key="bad")
        with pytest.raises(MessageError):
            await outbox.enqueue("not a message", key="bad")  # type: ignore[arg-type]
        assert await outbox.status("bad") is None
        assert sum((await outbox.statistics()).counts.values()) == 0


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"priority": "urgent"}, "priority"),
        ({"not_before": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"key": ""}, "key"),
        ({"key": "a\r\nBcc: x@example.com"}, "key"),
    ],
)
async def test_bad_enqueue_options_are_refused_before_anything_is_stored(
    url: str, kwargs: dict[str, object], words: str
) -> None:
    async with Outbox(url) as outbox:
        with pytest.raises((ConfigError, MessageError), match=words):
            await outbox.enqueue(message(1), **kwargs)  # type: ignore[arg-type]
        assert sum((await outbox.statistics()).counts.values()) == 0


async def test_a_transient_refusal_is_retried_later_for_that_recipient_only(url: str) -> None:
    msg = message(1, to=["a@example.net", "busy@example.net"])
    fault = Fault.reply("rcpt", 451, "4.2.1 Mailbox busy, try later", match="busy@", times=1)
    async with CaptureServer(faults=[fault]) as server, Outbox(url, retry=FAST_RETRY) as outbox:
        await outbox.enqueue(msg, key="two")
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            await _wait_final(outbox, ["two"])
        done = await outbox.status("two")
        assert done is not None
        assert done.state is OutboxState.DELIVERED
        assert set(done.accepted) == {"a@example.net", "busy@example.net"}
        assert done.attempts == 2
        rcpts = [m.recipients for m in server.messages]
        assert rcpts == [("a@example.net",), ("busy@example.net",)]
        assert {m.parsed["Message-ID"] for m in server.messages} == {msg.message_id}


async def test_a_permanent_refusal_ends_failed_with_the_servers_code_and_text(url: str) -> None:
    fault = Fault.reply("rcpt", 550, "5.1.1 No such user here")
    async with CaptureServer(faults=[fault]) as server, Outbox(url) as outbox:
        await outbox.enqueue(message(1), key="gone")
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            await _wait_final(outbox, ["gone"])
        done = await outbox.status("gone")
        assert done is not None
        assert done.state is OutboxState.FAILED
        refusal = done.refused["user1@example.net"]
        assert refusal.code == 550
        assert "No such user here" in refusal.text
        assert not refusal.retryable
        assert [s.key for s in await outbox.entries("failed")] == ["gone"]


async def test_a_message_waits_out_a_relay_that_is_down_and_goes_when_it_is_back(
    url: str,
) -> None:
    async with CaptureServer() as probe:
        port = probe.port  # nothing listens here once the probe is closed
    patient = RetryPolicy(attempts=100, base_delay=0.05, max_delay=0.1, jitter=False)
    async with Outbox(url, retry=patient) as outbox:
        await outbox.enqueue(message(1), key="wait")
        relay = Mailer(f"smtp://127.0.0.1:{port}", timeouts=SHORT_TIMEOUTS)
        async with relay, outbox.deliver(relay):
            down = await _eventually(outbox, "wait", lambda s: s.attempts >= 2)
            assert down.state is not OutboxState.FAILED
            assert down.error is not None
            async with CaptureServer(port=port) as server:
                await _wait_final(outbox, ["wait"])
                assert len(server.messages) == 1
        done = await outbox.status("wait")
        assert done is not None
        assert done.state is OutboxState.DELIVERED


async def test_a_message_not_before_a_time_is_not_sent_until_then(url: str) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    async with CaptureServer() as server, Outbox(url) as outbox:
        await outbox.enqueue(message(1), key="later", not_before=later)
        await outbox.enqueue(message(2), key="now")
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            await _wait_final(outbox, ["now"])
        status = await outbox.status("later")
        assert status is not None
        assert status.state is OutboxState.QUEUED
        assert status.next_attempt_at is not None
        assert abs((status.next_attempt_at - later).total_seconds()) < 0.01
        assert len(server.messages) == 1


async def test_a_high_priority_message_overtakes_a_backlog(url: str) -> None:
    async with CaptureServer() as server, Outbox(url) as outbox:
        for i in range(300):
            await outbox.enqueue(message(i), key=f"news:{i}", priority="low")
        urgent = message(999, subject="reset")
        async with (
            mailer_for(server) as mailer,
            outbox.deliver(mailer, concurrency=2, rate="100/s"),
        ):
            await server.wait_for_messages(5, timeout=10)
            await outbox.enqueue(urgent, key="reset", priority="high")
            await _wait_final(outbox, ["reset"])
            position = [m.parsed["Message-ID"] for m in server.messages].index(urgent.message_id)
        # behind at most what was already leased (2 * concurrency) and in flight
        assert position <= 5 + 2 * 2 + 2


async def test_the_idempotency_header_carries_the_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    async with CaptureServer() as server:
        async with Outbox(url, idempotency_header="resend-idempotency-key") as outbox:
            await outbox.enqueue(message(1), key="order:7")
            async with mailer_for(server) as mailer, outbox.deliver(mailer):
                await _wait_final(outbox, ["order:7"])
        assert server.messages[0].parsed["Resend-Idempotency-Key"] == "order:7"


async def test_a_foreign_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (id INTEGER)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(OutboxError, match="not an asyncmail outbox"):
        async with Outbox(f"sqlite:///{path}"):
            pass
    assert path.read_bytes() == before


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello, this is not SQLite\n" * 200)
    with pytest.raises(OutboxError):
        async with Outbox(f"sqlite:///{path}"):
            pass
    assert path.read_bytes() == b"hello, this is not SQLite\n" * 200


async def test_another_schema_version_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    async with Outbox(url):
        pass
    db = sqlite3.connect(tmp_path / "o.db")
    db.execute("UPDATE asyncmail_meta SET value = '99' WHERE name = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(OutboxError, match="schema version 99"):
        async with Outbox(url):
            pass


async def test_a_missing_directory_is_an_outbox_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="does not exist"):
        async with Outbox(f"sqlite:///{tmp_path}/nope/o.db"):
            pass


@pytest.mark.parametrize("bad", ["sqlite://relative.db", "postgres://db/x", "sqlite:///x?y=1"])
def test_an_unsupported_url_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError):
        Outbox(bad)


async def test_an_outbox_refuses_use_before_it_is_opened(url: str) -> None:
    outbox = Outbox(url)
    with pytest.raises(MailerClosedError):
        await outbox.enqueue(message(1))


async def test_retry_failed_queues_the_failed_recipients_again(url: str) -> None:
    fault = Fault.reply("rcpt", 550, "5.1.1 No such user", times=1)
    async with CaptureServer(faults=[fault]) as server, Outbox(url) as outbox:
        await outbox.enqueue(message(1), key="f")
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            await _wait_final(outbox, ["f"])
            assert (await outbox.status("f")).state is OutboxState.FAILED  # type: ignore[union-attr]
            assert await outbox.retry_failed() == 1
            await _wait_final(outbox, ["f"])
        done = await outbox.status("f")
        assert done is not None and done.state is OutboxState.DELIVERED
        assert len(server.messages) == 1


async def test_purge_deletes_only_final_messages(url: str) -> None:
    async with CaptureServer() as server, Outbox(url) as outbox:
        await outbox.enqueue(message(1), key="sent")
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            await _wait_final(outbox, ["sent"])
        await outbox.enqueue(message(2), key="waiting")
        assert await outbox.purge(older_than=3600) == 0
        assert await outbox.purge() == 1
        assert await outbox.status("sent") is None
        assert await outbox.status("waiting") is not None
        with pytest.raises(ConfigError):
            await outbox.purge(["queued"])


async def test_a_lost_lease_withholds_the_content_and_nothing_reaches_the_server(
    tmp_path: Path,
) -> None:
    """The gate before the content refuses once another worker has taken the lease."""
    url = f"sqlite:///{tmp_path / 'o.db'}"

    class TakenOver(SQLiteStore):
        async def mark_sending(self, key: str, token: str) -> bool:
            return False

    async with CaptureServer() as server, Outbox(url) as outbox:
        outbox.store = TakenOver(str(tmp_path / "o.db"))
        await outbox.store.open()
        await outbox.enqueue(message(1), key="x")
        async with mailer_for(server) as mailer, outbox.deliver(mailer) as delivery:
            with anyio.fail_after(10):
                while True:
                    if server.sessions and not delivery.held:
                        break
                    await anyio.sleep(0.02)
        assert server.messages == []
        assert server.sessions  # it got as far as DATA, then dropped the session
        status = await outbox.status("x")
        assert status is not None
        assert not status.final
        await outbox.store.aclose()


def _lease(**kw: object) -> Lease:
    fields: dict[str, object] = {
        "key": "k",
        "token": "t",
        "payload": b"",
        "message_id": "<m@x>",
        "pending": ("a@x",),
        "accepted": (),
        "refused": {},
        "attempts": 0,
        "first_attempt_at": None,
        "lane": 1,
    }
    fields.update(kw)
    return Lease(**fields)  # type: ignore[arg-type]


def test_outcome_values_are_frozen() -> None:
    outcome = Outcome(
        state=OutboxState.QUEUED,
        pending=(),
        accepted=(),
        refused={},
        unknown=(),
        attempts=1,
        first_attempt_at=None,
        due=0.0,
        error=None,
        reply=None,
    )
    with pytest.raises(AttributeError):
        outcome.state = OutboxState.FAILED  # type: ignore[misc]
    assert _lease().lane == 1


def test_messages_keep_their_message_id_through_the_store() -> None:
    from asyncmail.engine._job import Job
    from asyncmail.outbox._codec import encode, read

    msg = message(1, bcc=["hidden@example.org"], headers={"X-Campaign": "spring"})
    job = Job.of(msg)
    content = job.content_for(smtputf8=job.envelope.needs_smtputf8, eightbitmime=True)
    back = read(encode(msg, job.envelope, content)).message()
    assert isinstance(back, Message)
    assert back == msg  # every field, the Message-ID and Date included
    assert back.bcc == msg.bcc


def test_a_recipient_named_with_its_own_address_reads_back_from_the_store() -> None:
    from asyncmail.engine._job import Job
    from asyncmail.outbox._codec import encode, read

    named = Address("bob@example.org", "bob@example.org")
    msg = message(1, to=[named], sender=Address("shop@example.com", "shop@example.com"))
    job = Job.of(msg)
    content = job.content_for(smtputf8=job.envelope.needs_smtputf8, eightbitmime=True)
    back = read(encode(msg, job.envelope, content)).message()
    assert back == msg
    assert isinstance(back, Message)
    assert back.to == (named,)


def test_list_headers_survive_the_store_and_older_payloads_still_read_back() -> None:
    from asyncmail.engine._job import Job
    from asyncmail.outbox._codec import encode, read

    msg = message(
        1,
        unsubscribe="https://example.com/u/abc",
        unsubscribe_mailto="unsub@example.com",
        list_id="新闻 <news.example.com>",
    )
    job = Job.of(msg)
    content = job.content_for(smtputf8=job.envelope.needs_smtputf8, eightbitmime=True)
    payload = encode(msg, job.envelope, content)
    back = read(payload).message()
    assert back == msg
    assert isinstance(back, Message)
    head = msg.to_bytes().partition(b"MIME-Version")[0]
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in head
    assert back.to_bytes().partition(b"MIME-Version")[0] == head  # (the boundary is random)
    plain = message(2)
    job = Job.of(plain)
    content = job.content_for(smtputf8=job.envelope.needs_smtputf8, eightbitmime=True)
    head, _, rest = encode(plain, job.envelope, content).rpartition(b',"unsubscribe":null')
    older = head + rest.replace(b',"unsubscribe_mailto":null,"list_id":null', b"", 1)
    assert b"unsubscribe" not in older
    assert read(older).message() == plain


def test_a_worker_sends_the_stored_bytes_and_renders_again_only_without_8bitmime() -> None:
    from asyncmail.engine._job import Job
    from asyncmail.outbox._codec import encode, read
    from asyncmail.outbox._deliver import StoredJob

    msg = message(1, text="Plain English text with a single word of German: Grüße.\n" * 20)
    job = Job.of(msg)
    content = job.content_for(smtputf8=False, eightbitmime=True)
    stored = StoredJob(read(encode(msg, job.envelope, content)))
    assert stored.content_for(smtputf8=False, eightbitmime=True) is stored.stored.content
    assert stored.stored.content == content
    seven_bit = stored.content_for(smtputf8=False, eightbitmime=False)
    assert seven_bit is not stored.stored.content  # read back and rendered again
    assert not seven_bit.eight_bit
    assert max(seven_bit.data) < 128
    assert f"Message-ID: {msg.message_id}".encode() in seven_bit.data
    assert stored.envelope == job.envelope


async def test_a_refused_login_keeps_the_message_queued_until_the_setup_is_fixed(
    url: str,
) -> None:
    """A wrong password is the setup's fault, not the message's: it waits, then goes."""
    patient = RetryPolicy(attempts=100, base_delay=0.05, max_delay=0.1, jitter=False)
    async with (
        CaptureServer(tls="starttls", auth={"alice": "right"}) as server,
        Outbox(url, retry=patient) as outbox,
    ):
        await outbox.enqueue(message(1), key="k")
        wrong = mailer_for(server, username="alice", password="wrong")
        async with wrong, outbox.deliver(wrong):
            waiting = await _eventually(outbox, "k", lambda s: s.attempts >= 2)
        assert waiting.state is OutboxState.QUEUED
        assert waiting.error is not None and "535" in waiting.error
        assert "wrong" not in waiting.error
        right = mailer_for(server, username="alice", password="right")
        async with right, outbox.deliver(right):
            await _wait_final(outbox, ["k"])
        done = await outbox.status("k")
        assert done is not None and done.state is OutboxState.DELIVERED
        assert len(server.messages) == 1
