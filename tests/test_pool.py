"""The pool: warm reuse, limits, stale connections, FIFO waiters, graceful close, laziness."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from asyncmail import (
    Mailer,
    MailerClosedError,
    Message,
    PoolTimeout,
    RetryPolicy,
    SendResult,
    Server,
    Status,
    Timeouts,
    TLSMode,
)
from asyncmail.engine._send_many import _Queue
from asyncmail.testing import CaptureServer, Fault

from ._support import first_recipient, mailer_for, message, pipe


async def test_a_warm_pool_reuses_one_connection_for_sequential_sends() -> None:
    async with CaptureServer() as server:
        async with mailer_for(server) as mailer:
            for i in range(5):
                await mailer.send(message(i))
            stats = mailer.statistics()
    assert server.connections_opened == 1
    assert stats.delivered == 5
    assert stats.pool.idle == 1


async def test_connections_are_retired_after_max_messages() -> None:
    async with CaptureServer() as server:
        async with mailer_for(server, max_messages_per_connection=2) as mailer:
            for i in range(5):
                await mailer.send(message(i))
    assert server.connections_opened == 3
    quits = [s for s in server.sessions if "QUIT" in [c.upper() for c in s.commands]]
    assert len(quits) == 3  # retired ones and the last idle one all said goodbye


async def test_many_tasks_share_one_mailer_within_max_connections() -> None:
    async with CaptureServer() as server:
        async with mailer_for(server, max_connections=3) as mailer:
            results = await asyncio.gather(*(mailer.send(message(i)) for i in range(40)))
            stats = mailer.statistics()
    assert all(r.status is Status.DELIVERED for r in results)
    assert len(server.messages) == 40
    assert server.max_concurrent_connections <= 3
    assert stats.pool.open <= 3


async def test_send_many_never_exceeds_max_connections() -> None:
    async with CaptureServer() as server:
        async with mailer_for(server, max_connections=4) as mailer:
            results = [
                r async for r in mailer.send_many((message(i) for i in range(100)), concurrency=16)
            ]
    assert len(results) == 100
    assert all(r.status is Status.DELIVERED for r in results)
    assert server.max_concurrent_connections <= 4


async def test_idle_connection_closed_by_the_server_is_not_reused() -> None:
    async with CaptureServer() as server:
        async with mailer_for(server) as mailer:
            await mailer.send(message(0))
            await server.drop_connections()
            await asyncio.sleep(0)  # let the client notice the FIN
            result = await mailer.send(message(1))
    assert result.status is Status.DELIVERED
    assert result.attempts == 1
    assert server.connections_opened == 2


async def test_reused_connection_closed_by_server_is_retried_once_transparently() -> None:
    # the server drops the session exactly when the reused connection sends MAIL FROM
    async with CaptureServer() as server:
        async with mailer_for(server, retry=RetryPolicy(attempts=1)) as mailer:
            await mailer.send(message(0))
            server.inject(Fault.disconnect("mail", times=1))
            result = await mailer.send(message(1))
    assert result.status is Status.DELIVERED
    assert result.attempts == 1  # the stale connection does not count as an attempt
    assert server.connections_opened == 2
    assert len(server.messages) == 2


async def test_reused_connection_answering_421_is_retried_once_transparently() -> None:
    async with CaptureServer() as server:
        async with mailer_for(server, retry=RetryPolicy(attempts=1)) as mailer:
            await mailer.send(message(0))
            server.inject(Fault.reply("mail", 421, "4.4.2 Idle timeout", times=1))
            result = await mailer.send(message(1))
    assert result.status is Status.DELIVERED
    assert result.attempts == 1
    assert server.connections_opened == 2


async def test_a_fresh_connection_dropped_at_mail_is_an_ordinary_failed_attempt() -> None:
    async with CaptureServer(faults=[Fault.disconnect("mail", times=1)]) as server:
        async with mailer_for(server) as mailer:
            result = await mailer.send(message())
    assert result.status is Status.DELIVERED
    assert result.attempts == 2


async def test_waiting_for_a_connection_times_out_with_pool_timeout() -> None:
    async with CaptureServer(faults=[Fault.stall("dot", times=1)]) as server:
        async with mailer_for(server, max_connections=1, pool_timeout=0.2) as mailer:
            stuck = asyncio.create_task(mailer.send(message(0)))
            await server.wait_for_messages(1)
            with pytest.raises(PoolTimeout) as caught:
                await mailer.send(message(1))
            assert caught.value.retryable
            stuck.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stuck


async def test_waiters_are_served_first_come_first_served() -> None:
    order: list[int] = []

    async def send(i: int) -> None:
        await mailer.send(message(i))
        order.append(i)

    async with CaptureServer() as server:
        async with mailer_for(server, max_connections=1) as mailer:
            tasks = []
            for i in range(6):
                tasks.append(asyncio.create_task(send(i)))
                await asyncio.sleep(0)  # each task queues before the next starts
            await asyncio.gather(*tasks)
    assert order == list(range(6))
    assert [m.recipients[0] for m in server.messages] == [f"user{i}@example.net" for i in range(6)]


async def test_close_lets_in_flight_sends_finish_and_quits_idle_connections() -> None:
    async with CaptureServer() as server:
        mailer = mailer_for(server, max_connections=2)
        async with mailer:
            tasks = [asyncio.create_task(mailer.send(message(i))) for i in range(4)]
            await asyncio.sleep(0)
        results = [t.result() for t in tasks]
        assert mailer.statistics().pool.open == 0
    assert all(r.status is Status.DELIVERED for r in results)
    assert all("QUIT" in [c.upper() for c in s.commands] for s in server.sessions)
    assert all(s.closed for s in server.sessions)


@pytest.mark.parametrize("source", ["iterable", "async iterable"])
async def test_send_many_consumes_its_input_lazily_and_stops_reading_on_break(
    source: str,
) -> None:
    """A plain iterable is pulled by the workers, an async one through the feeder's queue."""
    produced = 0

    def endless() -> Iterator[Message]:
        nonlocal produced
        while True:
            produced += 1
            yield message(produced)

    async def endless_async() -> AsyncIterator[Message]:
        for item in endless():
            yield item

    messages = endless() if source == "iterable" else endless_async()
    async with CaptureServer() as server:
        async with mailer_for(server, max_connections=2) as mailer:
            results = []
            async for result in mailer.send_many(messages, concurrency=2):
                results.append(result)
                if len(results) == 10:
                    break
            produced_after_stop = produced
            # both connections serve a send again only once the workers let go of them: an
            # event to wait for, rather than a pause to hope the feeding stopped in
            assert (await mailer.send(message(999))).ok
            assert (await mailer.send(message(998))).ok
            assert mailer.statistics().in_flight == 0
    assert len(results) == 10
    # bounded read-ahead, per worker: a finished result waiting in the results buffer and
    # one in hand, the message in flight and the one chained behind it; plus the queue
    # (one slot per worker) and the item the feeder holds. Nothing more.
    assert produced <= 10 + 4 * 2 + 2 + 1
    # breaking out stopped the feeding (the feeder may have had one item in hand)
    assert produced <= produced_after_stop + 1
    assert len(server.messages) <= produced


async def test_a_worker_cancelled_as_its_message_comes_passes_the_message_on() -> None:
    """The feeder's queue wakes one waiting worker per message: if that one is cancelled
    before it takes it, the next waiting worker gets it (no message is left unseen)."""
    queue = _Queue(4)
    queue.receivers = 2
    first = asyncio.create_task(queue.receive())
    await asyncio.sleep(0)
    second = asyncio.create_task(queue.receive())
    await asyncio.sleep(0)  # both wait, the first in front
    assert queue.put("m")
    first.cancel()  # woken, but cancelled before it runs
    with anyio.fail_after(5):
        assert await second == "m"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_the_feeders_queue_wakes_the_feeder_once_half_of_it_is_taken() -> None:
    queue = _Queue(4)
    queue.receivers = 1
    assert [queue.put(i) for i in range(4)] == [True, True, True, False]  # full at 4
    feeder = asyncio.create_task(queue.room())
    await asyncio.sleep(0)
    assert queue.receive_nowait() == 0
    await asyncio.sleep(0)
    assert not feeder.done()  # 3 left: not half empty yet
    assert queue.receive_nowait() == 1
    with anyio.fail_after(5):
        assert await feeder  # 2 left: room, and a worker still takes
    queue.close()
    assert [queue.receive_nowait(), queue.receive_nowait()] == [2, 3]
    with pytest.raises(anyio.EndOfStream):
        queue.receive_nowait()


async def test_send_many_takes_an_async_iterable_and_keeps_each_message() -> None:
    async def source() -> AsyncIterator[Message]:
        for i in range(12):
            yield message(i)

    async with CaptureServer() as server:
        async with mailer_for(server) as mailer:
            results = [r async for r in mailer.send_many(source(), concurrency=3)]
    assert sorted(first_recipient(r) for r in results) == sorted(
        f"user{i}@example.net" for i in range(12)
    )
    assert len(server.messages) == 12


class _InputBroke(Exception):
    pass


@pytest.mark.parametrize("kind", ["iterable", "async-iterable"])
async def test_send_many_ends_with_the_inputs_exception_once_each_taken_message_has_its_result(
    kind: str,
) -> None:
    def made() -> Iterator[Message]:
        for i in range(7):
            yield message(i)
        raise _InputBroke("the database went away")

    async def made_async() -> AsyncIterator[Message]:
        for item in made():
            yield item

    source = made() if kind == "iterable" else made_async()
    results: list[SendResult[Message]] = []

    async def consume(mailer: Mailer) -> None:
        async for result in mailer.send_many(source):
            results.append(result)

    async with CaptureServer() as server:
        async with mailer_for(server, max_connections=3) as mailer:
            with pytest.raises(_InputBroke, match="database"):
                await consume(mailer)
            assert mailer.statistics().in_flight == 0
            assert (await mailer.send(message(99))).ok  # the Mailer carries on
    assert sorted(first_recipient(r) for r in results) == sorted(
        f"user{i}@example.net" for i in range(7)
    )
    assert all(r.status is Status.DELIVERED for r in results)
    assert len(server.messages) == 8


async def test_send_many_of_an_input_that_cannot_be_iterated_raises_its_exception() -> None:
    class Unreadable:
        def __iter__(self) -> Iterator[Message]:
            raise _InputBroke("no cursor")

    async def consume(mailer: Mailer) -> None:
        async for _ in mailer.send_many(Unreadable()):
            pass  # pragma: no cover - nothing comes

    async with CaptureServer() as server:
        async with mailer_for(server) as mailer:
            with pytest.raises(_InputBroke, match="cursor"):
                await consume(mailer)
            assert (await mailer.send(message(1))).ok
    assert len(server.messages) == 1


async def test_invalid_messages_in_send_many_become_failed_results() -> None:
    import email.message

    broken = email.message.EmailMessage()  # no From, no To
    async with CaptureServer() as server:
        async with mailer_for(server) as mailer:
            inputs: list[Message | email.message.EmailMessage] = [message(0), broken, message(1)]
            results = [r async for r in mailer.send_many(inputs)]
    assert len(results) == 3
    statuses = sorted(r.status.value for r in results)
    assert statuses == ["delivered", "delivered", "failed"]
    [failed] = [r for r in results if r.status is Status.FAILED]
    assert failed.message is broken
    assert failed.attempts == 0


async def test_before_send_is_called_once_per_message_before_its_transaction() -> None:
    seen: list[str] = []
    async with CaptureServer(faults=[Fault.reply("mail", 451, "busy", times=1)]) as server:
        async with mailer_for(server) as mailer:

            def journal(msg: Message) -> None:
                # written ahead: the server has not stored this message yet
                assert all(msg.message_id != m.parsed["Message-ID"] for m in server.messages)
                seen.append(msg.recipients[0])

            results = [
                r async for r in mailer.send_many([message(0), message(1)], before_send=journal)
            ]
    assert sorted(seen) == ["user0@example.net", "user1@example.net"]
    assert sum(r.attempts for r in results) == 3


async def test_repr_and_statistics_show_live_counts() -> None:
    async with CaptureServer() as server:
        async with mailer_for(server) as mailer:
            await mailer.send(message())
            stats = mailer.statistics()
            text = repr(mailer)
    assert stats.delivered == 1
    assert stats.pool.idle == 1
    assert "delivered=1" in text
    with pytest.raises(AttributeError):
        stats.delivered = 2  # type: ignore[misc]


async def test_a_server_connection_limit_lowers_the_pool_instead_of_failing_messages() -> None:
    """Relays cap connections per client (421 at the greeting): the pool keeps to what the
    server accepted and the messages wait for a connection; none burns an attempt."""
    async with CaptureServer() as server:
        async with mailer_for(server, max_connections=4, retry=RetryPolicy(attempts=1)) as m:
            await asyncio.gather(m.send(message(0)), m.send(message(1)))  # two are open
            accepted_sessions = {msg.session_id for msg in server.messages}
            server.inject(Fault.reply("greeting", 421, "4.7.0 Error: too many connections"))
            results = [
                r async for r in m.send_many((message(i) for i in range(2, 40)), concurrency=4)
            ]
            stats = m.statistics()
    assert len(results) == 38
    assert all(r.status is Status.DELIVERED and r.attempts == 1 for r in results)
    assert {msg.session_id for msg in server.messages} == accepted_sessions
    assert stats.pool.open <= 2
    assert server.connections_opened > 2  # the server did refuse some


async def test_closing_during_send_many_gives_every_message_taken_an_outcome() -> None:
    produced = 0

    def source() -> Iterator[Message]:
        nonlocal produced
        for i in range(500):
            produced += 1
            yield message(i)

    async with CaptureServer() as server:
        mailer = mailer_for(server, max_connections=2)
        async with mailer:
            results = []
            closing: asyncio.Task[None] | None = None
            async for result in mailer.send_many(source(), concurrency=2):
                results.append(result)
                if len(results) == 5:
                    closing = asyncio.create_task(mailer.aclose())
            assert closing is not None
            await closing
    assert produced < 500  # the input stopped being read
    assert len(results) == produced  # and nothing taken from it went unreported
    closed = [r for r in results if r.status is Status.FAILED]
    assert all(isinstance(r.error, MailerClosedError) for r in closed)
    assert len(server.messages) == len(results) - len(closed)


async def test_a_lowered_connection_cap_is_raised_again_later() -> None:
    async with CaptureServer() as server:
        async with mailer_for(server, max_connections=4) as mailer:
            await asyncio.gather(mailer.send(message(0)), mailer.send(message(1)))
            server.inject(Fault.reply("greeting", 421, "4.7.0 too many connections", times=1))
            await asyncio.gather(*(mailer.send(message(i)) for i in range(2, 8)))
            # TODO(engine rewrite): the cap is not observable (3 connections stay open under a
            # cap of 2 here) and the pool reads time.monotonic() directly; with the cap in
            # statistics() and a clock to patch, drop these private accesses.
            pool = mailer._pools[0]  # noqa: SLF001
            assert pool._cap == 2  # noqa: SLF001
            pool._cap_changed -= 31  # noqa: SLF001 (as if half a minute had passed, no sleeping)
            await asyncio.gather(*(mailer.send(message(i)) for i in range(8, 16)))
            assert pool._cap == 3  # noqa: SLF001
    assert len(server.messages) == 16


async def test_breaking_out_of_send_many_at_any_point_leaves_the_mailer_working() -> None:
    # A worker whose I/O has just finished runs on past the cancel until its next await;
    # it must stop quietly when it finds the results stream closed, not crash the Mailer.
    async with CaptureServer() as server:
        async with mailer_for(server, max_connections=3) as mailer:
            for stop_after in range(1, 25):
                seen = 0
                stream = mailer.send_many((message(i) for i in range(100)), concurrency=3)
                async with contextlib.aclosing(stream) as results:
                    async for result in results:
                        assert result.status is Status.DELIVERED
                        seen += 1
                        if seen == stop_after:
                            break
                assert seen == stop_after
            after = await mailer.send(message(1000))
    assert after.status is Status.DELIVERED
    assert server.messages[-1].recipients == ("user1000@example.net",)


async def test_a_retired_connection_says_quit_without_holding_up_the_send() -> None:
    # One message per connection: every send retires its connection. This server never
    # answers QUIT, so a send that waited for the goodbye would still be running when
    # the server sees the QUIT; closing the Mailer is what waits for it (until it times out).
    async with CaptureServer(faults=[Fault.stall("quit")]) as server:
        mailer = mailer_for(server, max_messages_per_connection=1, timeouts=Timeouts(command=0.5))
        async with mailer:
            for i in range(2):
                send = asyncio.create_task(mailer.send(message(i)))
                # (the server's records are written by protocol callbacks: poll them)
                while len(server.sessions) <= i or "QUIT" not in server.sessions[i].commands:  # noqa: ASYNC110
                    await asyncio.sleep(0)
                assert send.done()  # its connection's QUIT is on the wire, unanswered
                assert send.result().status is Status.DELIVERED
            assert not any(s.closed for s in server.sessions)
        while not all(s.closed for s in server.sessions):  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # the client hangs up once its QUIT times out
        assert mailer.statistics().pool.closed == 2
    assert len(server.messages) == 2


async def test_a_queued_acquire_cancelled_before_a_hand_over_raises_cancelled_and_gives_back() -> (
    None
):
    """Bug 5: the waiter is handed a connection after its task was cancelled, before it ran.

    The cancelled acquire must end in CancelledError (not an internal ValueError), and the
    connection it was handed must go back to the pool.
    """
    from asyncmail import PoolLimits, Server, Timeouts, TLSMode
    from asyncmail._pool import Pool

    async with CaptureServer() as server:
        target = Server(host=server.host, port=server.port, tls=TLSMode.NONE)
        pool = Pool(target, PoolLimits(max_connections=1), Timeouts())
        conn = await pool.acquire()
        queued = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)  # it is now waiting in line
        assert pool.statistics().waiting == 1
        queued.cancel()  # its task will see the cancel when it next runs...
        await pool.release(conn, reusable=True)  # ...after this hands it the connection
        with pytest.raises(asyncio.CancelledError):
            await queued
        stats = pool.statistics()
        assert (stats.busy, stats.idle, stats.waiting) == (0, 1, 0)
        again = await pool.acquire()  # and the pool serves the next one
        await pool.release(again, reusable=True)
        await pool.aclose()


@contextlib.asynccontextmanager
async def _one_connection_per_host(port: int, slow_greeting: float) -> AsyncIterator[list[int]]:
    """A front for the capture server that takes one connection at a time, as Exim's
    ``smtp_accept_max_per_host = 1`` does: the one it takes greets ``slow_greeting`` late,
    and any other that comes meanwhile gets 421 at once. Yields [taken, refused]."""
    counts = [0, 0]
    busy = False

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal busy
        if busy:
            counts[1] += 1
            writer.write(b"421 4.7.0 Too many concurrent SMTP connections from this IP\r\n")
            await writer.drain()
            writer.close()
            return
        busy = True
        counts[0] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.sleep(slow_greeting)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            busy = False

    front = await asyncio.start_server(handle, "127.0.0.1", 0)
    counts.append(front.sockets[0].getsockname()[1])
    try:
        yield counts
    finally:
        front.close()
        await front.wait_closed()


async def test_a_421_while_the_accepted_connection_is_still_opening_waits_for_it() -> None:
    """At a cold start the server takes one connection and refuses the others before the
    one it took has greeted: nothing is open yet, but the refusals still mean "not one more",
    so the messages wait for that connection instead of failing."""
    async with CaptureServer() as server, _one_connection_per_host(server.port, 0.2) as front:
        target = Server(host="127.0.0.1", port=front[2], tls=TLSMode.NONE)
        async with Mailer(target, max_connections=4, retry=RetryPolicy(attempts=1)) as m:
            results = [r async for r in m.send_many((message(i) for i in range(12)), concurrency=4)]
    assert [r.status for r in results] == [Status.DELIVERED] * 12
    assert all(r.attempts == 1 for r in results)
    assert front[1] >= 1  # the server did refuse some
    assert len(server.messages) == 12
