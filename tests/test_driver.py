"""The session driver's chaining paths, against a real capture server.

With PIPELINING a worker writes the next message's MAIL/RCPT/DATA right behind the final dot
of the one before. These tests pin what happens to that chained message when the connection
ends under it, when the connection may carry no more, and when its write-ahead hook fails.
"""

from __future__ import annotations

from collections.abc import Callable

from asyncmail import (
    Mailer,
    Message,
    PermanentError,
    Rejected,
    RetryPolicy,
    Server,
    Status,
    TLSMode,
)
from asyncmail.testing import CaptureServer, Fault

from ._scripted import Conn, ScriptedServer
from ._support import copies, mailer_for, message


def scripted_mailer(server: ScriptedServer) -> Mailer:
    target = Server(host="127.0.0.1", port=server.port, tls=TLSMode.NONE)
    return Mailer(
        target, max_connections=1, retry=RetryPolicy(attempts=3, base_delay=0, jitter=False)
    )


async def test_a_group_chained_behind_a_lost_dot_is_no_attempt_and_goes_first_next() -> None:
    """The connection drops after message 0's dot, with message 1's group already behind it."""
    async with CaptureServer(faults=[Fault.disconnect("dot", times=1)]) as server:
        async with mailer_for(server, max_connections=1) as mailer:
            results = [
                r async for r in mailer.send_many([message(i) for i in range(5)], concurrency=1)
            ]
    by_to = {r.message.to[0].addr: r for r in results}
    first = by_to["user0@example.net"]
    assert first.status is Status.UNKNOWN  # stored, but the reply never came
    assert copies(server, "user0@example.net") == 1
    for i in range(1, 5):
        assert by_to[f"user{i}@example.net"].status is Status.DELIVERED
        assert copies(server, f"user{i}@example.net") == 1
    # the chained group went out on the dead connection, yet it does not count as an attempt
    assert by_to["user1@example.net"].attempts == 1
    assert len(server.sessions) == 2


async def test_a_connection_at_its_message_limit_chains_no_more() -> None:
    async with CaptureServer() as server:
        async with mailer_for(server, max_connections=1, max_messages_per_connection=2) as mailer:
            results = [
                r async for r in mailer.send_many([message(i) for i in range(5)], concurrency=1)
            ]
    assert [r.status for r in results] == [Status.DELIVERED] * 5
    assert [
        len([c for c in s.commands if c.upper().startswith("MAIL")]) for s in server.sessions
    ] == [2, 2, 1]


def failing_hook(bad: set[str]) -> Callable[[Message], None]:
    def before_send(msg: Message) -> None:
        if msg.to[0].addr in bad:
            raise OSError("disk full")

    return before_send


async def test_a_failing_hook_for_the_first_message_of_a_connection_sends_nothing_for_it() -> None:
    async with CaptureServer() as server:
        async with mailer_for(server, max_connections=1) as mailer:
            hook = failing_hook({"user0@example.net"})
            stream = mailer.send_many(
                [message(i) for i in range(4)], concurrency=1, before_send=hook
            )
            results = [r async for r in stream]
    [failed] = [r for r in results if r.status is Status.FAILED]
    assert failed.message.to[0].addr == "user0@example.net"
    assert failed.attempts == 0
    assert isinstance(failed.error, PermanentError)
    assert isinstance(failed.error.__cause__, OSError)
    assert copies(server, "user0@example.net") == 0
    assert sum(r.status is Status.DELIVERED for r in results) == 3


async def test_a_failing_hook_for_a_chained_message_sends_nothing_for_it() -> None:
    async with CaptureServer() as server:
        async with mailer_for(server, max_connections=1) as mailer:
            hook = failing_hook({"user1@example.net", "user3@example.net"})
            stream = mailer.send_many(
                [message(i) for i in range(5)], concurrency=1, before_send=hook
            )
            results = [r async for r in stream]
    assert len(results) == 5
    failed = sorted(r.message.to[0].addr for r in results if r.status is Status.FAILED)
    assert failed == ["user1@example.net", "user3@example.net"]
    assert all(r.attempts == 0 for r in results if r.status is Status.FAILED)
    assert copies(server, "user1@example.net") == copies(server, "user3@example.net") == 0
    assert all(copies(server, f"user{i}@example.net") == 1 for i in (0, 2, 4))
    assert len(server.sessions) == 1  # the connection stayed clean and carried the rest


async def test_a_chained_message_over_the_size_limit_is_refused_before_any_io() -> None:
    """A message the server's SIZE refuses is never chained; the others flow around it."""
    async with ScriptedServer(extensions=("PIPELINING", "8BITMIME", "SIZE 20000")) as server:
        inputs = [message(0), message(1, text="x" * 30000), message(2)]
        async with scripted_mailer(server) as mailer:
            results = [r async for r in mailer.send_many(inputs, concurrency=1)]
    by_to = {r.message.to[0].addr: r for r in results}
    refused = by_to["user1@example.net"]
    assert refused.status is Status.FAILED
    assert isinstance(refused.error, Rejected) and refused.error.code == 552
    assert by_to["user0@example.net"].ok and by_to["user2@example.net"].ok
    assert server.copies("user1@example.net") == 0
    assert server.connections == 1


async def test_jobs_chained_behind_a_lost_dot_keep_their_own_outcomes() -> None:
    """Behind message 0's lost dot: one refused before I/O, one whose hook failed, one sent."""
    async with ScriptedServer(extensions=("PIPELINING", "8BITMIME", "SIZE 20000")) as server:

        async def drop_first(conn: Conn) -> bool:
            return conn.number == 1

        server.dot_reply = lambda conn: "" if conn.number == 1 else "250 2.0.0 stored"
        server.after_dot = drop_first
        inputs = [message(0), message(1, text="x" * 30000), message(2), message(3)]
        hook = failing_hook({"user2@example.net"})
        async with scripted_mailer(server) as mailer:
            results = [r async for r in mailer.send_many(inputs, concurrency=1, before_send=hook)]
    by_to = {r.message.to[0].addr: r for r in results}
    assert len(results) == 4
    assert by_to["user0@example.net"].status is Status.UNKNOWN
    assert isinstance(by_to["user1@example.net"].error, Rejected)
    assert isinstance(by_to["user2@example.net"].error, PermanentError)
    assert by_to["user2@example.net"].attempts == 0
    assert by_to["user3@example.net"].ok
    assert [server.copies(f"user{i}@example.net") for i in range(4)] == [1, 0, 0, 1]


async def test_a_chained_job_whose_hook_failed_still_gets_its_result_when_the_dot_is_lost() -> None:
    async with ScriptedServer() as server:

        async def drop_first(conn: Conn) -> bool:
            return conn.number == 1

        server.dot_reply = lambda conn: "" if conn.number == 1 else "250 2.0.0 stored"
        server.after_dot = drop_first
        hook = failing_hook({"user1@example.net"})
        async with scripted_mailer(server) as mailer:
            inputs = [message(i) for i in range(3)]
            results = [r async for r in mailer.send_many(inputs, concurrency=1, before_send=hook)]
    by_to = {r.message.to[0].addr: r for r in results}
    assert by_to["user0@example.net"].status is Status.UNKNOWN
    assert by_to["user1@example.net"].status is Status.FAILED
    assert by_to["user1@example.net"].attempts == 0
    assert by_to["user2@example.net"].ok
    assert [server.copies(f"user{i}@example.net") for i in range(3)] == [1, 0, 1]
