"""Closing the Mailer and cancelling sends: each in-progress send ends as the Mailer docs say.

What ``aclose()`` and cancellation mean is defined in ``asyncmail.engine._mailer``. Each phase is
reached deterministically with a fault (a stall at the greeting, at MAIL, at the final dot) or, for
the middle of DATA, with a hop that stops reading the client's content so the client is stuck
writing it. ``anyio.fail_after`` only bounds hangs; nothing here claims a speed.

The tests of the content's phases run on DATA and on BDAT (``by_body``: a server that offers
CHUNKING, where the LAST chunk's reply is the final dot's).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import anyio
import pytest

from asyncmail import (
    Mailer,
    MailerClosedError,
    Message,
    PermanentError,
    Phase,
    RetryPolicy,
    SendResult,
    Server,
    ShutdownError,
    Status,
    TLSMode,
    TransientError,
    UnknownOutcomeError,
)
from asyncmail.testing import CaptureServer, Fault
from asyncmail.testing._faults import Phase as FaultPhase

from ._support import NO_WAIT_RETRY, copies, mailer_for, message

ONE_ATTEMPT = RetryPolicy(attempts=1)
#: A hang bound, not a speed claim.
HANG = 10
#: Short enough that a close gives up on a stalled send; the stall is forever anyway.
SMALL_CLOSE = 0.2
#: So long that a close which waits for it shows up as a hang.
LONG_CLOSE = 1000.0
#: Content far larger than what loopback socket buffers hold once the hop stops reading.
HUGE = 10 * 1024 * 1024

pytestmark = pytest.mark.usefixtures("no_error_logs")

#: The content goes by DATA, or by BDAT to a server that offers CHUNKING.
by_body = pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])


def dot(chunking: bool) -> FaultPhase:
    """The reply that ends the content: the final dot's, or the LAST chunk's."""
    return "bdat_last" if chunking else "dot"


@pytest.fixture
def no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The library never logs an ERROR (an internal error reaching a log is still a bug)."""
    caplog.set_level(logging.WARNING, logger="asyncmail")
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def until(condition: Callable[[], bool]) -> None:
    """Wait for a state the test is about to reach (bounded: never a proof of absence)."""
    with anyio.move_on_after(HANG):
        # (polled: the server's books live in other objects, with no event to wait on)
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.001)
    assert condition(), f"not reached within {HANG} s"


def huge_message(i: int) -> Message:
    line = "0123456789" * 7 + "\n"
    return message(i, text=line * (HUGE // len(line)), html=None)


def delivered_to(server: CaptureServer, i: int) -> int:
    return copies(server, f"user{i}@example.net")


def went_by_bdat(server: CaptureServer) -> bool:
    """Whether the server was sent content by BDAT."""
    return any(c.upper().startswith("BDAT") for s in server.sessions for c in s.commands)


def idle_mailer(mailer: Mailer) -> bool:
    return mailer.statistics().in_flight == 0


class ChokeHop:
    """A TCP hop to a server that stops reading a client's content once it starts flowing.

    The first connection only: after the server's 354 went back (or, with BDAT, once the
    client sends a BDAT command, which is not passed on), the hop reads no more from the
    client, so a client sending content larger than the socket buffers is stuck mid-DATA (its
    final dot never leaves), and the server stores nothing. Later connections pass through.
    """

    def __init__(self, server: CaptureServer) -> None:
        self.target = server
        self.choked = asyncio.Event()
        self.port = 0
        self._connections = 0
        self._listener: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> ChokeHop:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # a small receive buffer, inherited by accepted sockets: little content fits in it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._listener = await asyncio.start_server(self._handle, sock=sock)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._listener is not None
        self._listener.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def mailer(self, **options: Any) -> Mailer:  # noqa: ANN401 (Mailer's keyword arguments)
        options.setdefault("retry", NO_WAIT_RETRY)
        return Mailer(Server(host="127.0.0.1", port=self.port, tls=TLSMode.NONE), **options)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        chokes = self._connections == 0
        self._connections += 1
        up_reader, up_writer = await asyncio.open_connection(self.target.host, self.target.port)
        self._writers += [writer, up_writer]
        go_ahead = asyncio.Event()

        async def down() -> None:
            seen = b""
            while data := await up_reader.read(65536):
                writer.write(data)
                seen = (seen + data)[-1024:]
                if b"354" in seen:
                    go_ahead.set()
            writer.close()

        async def up() -> None:
            while data := await reader.read(65536):
                if chokes and (go_ahead.is_set() or b"BDAT " in data):
                    self.choked.set()
                    await asyncio.Event().wait()  # read nothing more: the content backs up
                up_writer.write(data)
            up_writer.close()

        try:
            await asyncio.gather(down(), up())
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()
            up_writer.transport.abort()
            self._tasks.discard(task)


async def shutdown_of(send: Awaitable[SendResult[Any]]) -> ShutdownError:
    """The ShutdownError a send raises, checked to carry its FAILED result."""
    with pytest.raises(ShutdownError) as caught:
        await send
    error = caught.value
    assert isinstance(error, TransientError)
    assert isinstance(error, MailerClosedError)
    assert error.retryable
    assert error.result is not None
    assert error.result.status is Status.FAILED
    assert error.result.error is error
    return error


async def still_delivers(server: CaptureServer, i: int) -> None:
    """A new Mailer to the same server delivers, and closes without anything left over."""
    async with mailer_for(server) as fresh:
        result = await fresh.send(message(i))
    assert result.status is Status.DELIVERED
    assert fresh.statistics().in_flight == 0
    assert delivered_to(server, i) == 1


# -- aclose() while sends are in progress -------------------------------------------------------


@by_body
async def test_close_ends_sends_queued_for_a_connection_with_shutdown_error(
    chunking: bool,
) -> None:
    """Sends still waiting for a connection when the close gives up never reach the server."""
    faults = [Fault.stall(dot(chunking), times=1)]
    async with CaptureServer(chunking=chunking, faults=faults) as server:
        mailer = mailer_for(server, max_connections=1, close_timeout=SMALL_CLOSE)
        with anyio.fail_after(HANG):
            async with mailer:
                held = asyncio.create_task(mailer.send(message(0)))
                await server.wait_for_messages(1)  # the one connection is stuck at the dot
                queued = [asyncio.create_task(mailer.send(message(i))) for i in (1, 2, 3)]
                await until(lambda: mailer.statistics().pool.waiting == 3)
            outcomes = await asyncio.gather(held, *queued, return_exceptions=True)
        stats = mailer.statistics()
        assert isinstance(outcomes[0], UnknownOutcomeError)
        assert outcomes[0].result is not None
        assert outcomes[0].result.status is Status.UNKNOWN
        for outcome in outcomes[1:]:
            assert type(outcome) is ShutdownError, repr(outcome)
            assert outcome.result is not None
            assert outcome.result.status is Status.FAILED
        assert stats.in_flight == 0
        assert (stats.delivered, stats.failed, stats.unknown) == (0, 3, 1)
        assert delivered_to(server, 0) == 1  # stored before the stall
        assert [delivered_to(server, i) for i in (1, 2, 3)] == [0, 0, 0]
        assert went_by_bdat(server) is chunking
        await still_delivers(server, 9)


async def test_close_during_the_handshake_ends_the_send_with_shutdown_error() -> None:
    async with CaptureServer(faults=[Fault.stall("greeting", times=1)]) as server:
        mailer = mailer_for(server, close_timeout=SMALL_CLOSE)
        with anyio.fail_after(HANG):
            async with mailer:
                send = asyncio.create_task(mailer.send(message(0)))
                await until(lambda: server.connections_opened == 1)
            error = await shutdown_of(send)
        assert error.result is not None
        assert mailer.statistics().in_flight == 0
        assert mailer.statistics().failed == 1
        assert delivered_to(server, 0) == 0
        await still_delivers(server, 1)


@by_body
async def test_close_in_the_middle_of_data_ends_the_send_failed_with_shutdown_error(
    chunking: bool,
) -> None:
    async with CaptureServer(chunking=chunking) as server, ChokeHop(server) as hop:
        mailer = hop.mailer(close_timeout=SMALL_CLOSE)
        with anyio.fail_after(HANG):
            async with mailer:
                send = asyncio.create_task(mailer.send(huge_message(0)))
                await hop.choked.wait()  # the content is flowing and cannot finish
            await shutdown_of(send)
        stats = mailer.statistics()
        assert stats.in_flight == 0
        assert (stats.delivered, stats.failed, stats.unknown) == (0, 1, 0)
        assert delivered_to(server, 0) == 0
        assert server.messages == []
        await still_delivers(server, 1)
        assert went_by_bdat(server) is chunking


@by_body
async def test_close_after_the_final_dot_ends_the_send_unknown(chunking: bool) -> None:
    faults = [Fault.stall(dot(chunking), times=1)]
    async with CaptureServer(chunking=chunking, faults=faults) as server:
        mailer = mailer_for(server, close_timeout=SMALL_CLOSE)
        with anyio.fail_after(HANG):
            async with mailer:
                send = asyncio.create_task(mailer.send(message(0)))
                await server.wait_for_messages(1)  # stored: only the reply is missing
            with pytest.raises(UnknownOutcomeError) as caught:
                await send
        result = caught.value.result
        assert result is not None
        assert result.status is Status.UNKNOWN
        assert result.unknown == ("user0@example.net",)
        stats = mailer.statistics()
        assert stats.in_flight == 0
        assert (stats.delivered, stats.failed, stats.unknown) == (0, 0, 1)
        assert delivered_to(server, 0) == 1
        assert went_by_bdat(server) is chunking
        await still_delivers(server, 1)


async def test_close_cuts_a_retry_backoff_short_with_shutdown_error() -> None:
    retry = RetryPolicy(attempts=3, base_delay=1000, max_delay=1000, max_time=10_000, jitter=False)
    fault = Fault.reply("mail", 451, "4.3.0 Try again later", times=1)
    async with CaptureServer(faults=[fault]) as server:
        mailer = mailer_for(server, retry=retry, close_timeout=LONG_CLOSE)
        async with mailer:
            send = asyncio.create_task(mailer.send(message(0)))

            def waiting_out_backoff() -> bool:
                s = mailer.statistics()
                return s.in_flight == 1 and s.pool.busy == 0 and s.pool.connecting == 0

            await until(lambda: any("MAIL" in " ".join(s.commands) for s in server.sessions))
            await until(waiting_out_backoff)
            with anyio.fail_after(HANG):
                await mailer.aclose()
                error = await shutdown_of(send)
        assert error.result is not None
        assert error.result.attempts == 1
        assert mailer.statistics().in_flight == 0
        assert mailer.statistics().failed == 1
        assert delivered_to(server, 0) == 0
        await still_delivers(server, 1)


# -- cancelling send() at each phase ----------------------------------------------------------

Reach = Callable[[CaptureServer, Mailer, "ChokeHop | None"], Awaitable[None]]


async def _reached_queue(server: CaptureServer, mailer: Mailer, hop: ChokeHop | None) -> None:
    await until(lambda: mailer.statistics().pool.waiting == 1)


async def _reached_handshake(server: CaptureServer, mailer: Mailer, hop: ChokeHop | None) -> None:
    # (at EHLO, not at the greeting: a task.cancel() landing as aiosmtplib's connect
    # completes is lost in Python 3.11's asyncio.wait_for; see the report of this suite)
    await until(lambda: any("EHLO" in " ".join(s.commands) for s in server.sessions))


async def _reached_envelope(server: CaptureServer, mailer: Mailer, hop: ChokeHop | None) -> None:
    await until(lambda: any("MAIL" in " ".join(s.commands) for s in server.sessions))


async def _reached_mid_data(server: CaptureServer, mailer: Mailer, hop: ChokeHop | None) -> None:
    assert hop is not None
    with anyio.fail_after(HANG):
        await hop.choked.wait()


async def _reached_dot(server: CaptureServer, mailer: Mailer, hop: ChokeHop | None) -> None:
    await server.wait_for_messages(1)


#: phase -> (server faults, how to know the send is there, copies of the cancelled message);
#: "dot" stands for the LAST chunk with BDAT
PHASES: dict[str, tuple[list[Fault], Reach, int]] = {
    "queued": ([Fault.stall("dot", times=1)], _reached_queue, 0),
    "handshake": ([Fault.stall("ehlo", times=1)], _reached_handshake, 0),
    "envelope": ([Fault.stall("mail", times=1)], _reached_envelope, 0),
    "mid_data": ([], _reached_mid_data, 0),
    "after_dot": ([Fault.stall("dot", times=1)], _reached_dot, 1),
}


def faults_at(phase: str, chunking: bool) -> list[Fault]:
    """``PHASES``' faults for ``phase``, on BDAT when ``chunking``."""
    faults, _, _ = PHASES[phase]
    return [replace(f, phase=dot(chunking)) if f.phase == "dot" else f for f in faults]


async def _cancel_while(
    mailer: Mailer, msg: Message, how: str, reached: Callable[[], Awaitable[None]]
) -> None:
    """Send ``msg``, cancel it once ``reached`` returns, and check the caller saw the cancel."""
    if how == "task":
        task = asyncio.create_task(mailer.send(msg))
        await reached()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return
    scope = anyio.CancelScope()
    returned: list[object] = []

    async def sender() -> None:
        with scope:
            returned.append(await mailer.send(msg))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sender)
        await reached()
        scope.cancel()
    assert scope.cancelled_caught
    assert returned == []


@by_body
@pytest.mark.parametrize("how", ["task", "scope"])
@pytest.mark.parametrize("phase", list(PHASES))
async def test_cancelling_a_send_raises_in_the_caller_and_the_mailer_carries_on(
    phase: str, how: str, chunking: bool
) -> None:
    _, reach, stored = PHASES[phase]
    faults = faults_at(phase, chunking)
    async with (
        CaptureServer(chunking=chunking, faults=faults) as server,
        ChokeHop(server) as hop,
    ):
        options: dict[str, Any] = {"close_timeout": LONG_CLOSE}
        if phase == "queued":
            options["max_connections"] = 1
        mailer = hop.mailer(**options) if phase == "mid_data" else mailer_for(server, **options)
        cancelled = huge_message(1) if phase == "mid_data" else message(1)
        async with mailer:
            holder = None
            if phase == "queued":  # the only connection is held at the dot by another send
                holder = asyncio.create_task(mailer.send(message(0)))
                await server.wait_for_messages(1)
            with anyio.fail_after(HANG):
                await _cancel_while(mailer, cancelled, how, lambda: reach(server, mailer, hop))
                if holder is not None:  # free the connection for the next send
                    holder.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await holder
            await until(lambda: idle_mailer(mailer))
            stats = mailer.statistics()
            assert (stats.delivered, stats.failed, stats.unknown) == (0, 0, 0)
            result = await mailer.send(message(2))
            assert result.status is Status.DELIVERED
            assert result.attempts == 1
            with anyio.fail_after(HANG):  # bug 7: a cancelled send left aclose waiting it out
                await mailer.aclose()
        stats = mailer.statistics()
        assert stats.in_flight == 0
        assert (stats.delivered, stats.failed, stats.unknown) == (1, 0, 0)
        assert delivered_to(server, 1) == stored
        assert delivered_to(server, 2) == 1
        assert went_by_bdat(server) is chunking
        await still_delivers(server, 3)


# -- send_many ------------------------------------------------------------------------------


class Source:
    """Messages numbered from 0, counting how many the consumer took."""

    def __init__(self, count: int, make: Callable[[int], Message] = message) -> None:
        self.count = count
        self.make = make
        self.taken = 0

    def __iter__(self) -> Iterator[Message]:
        for i in range(self.count):
            self.taken += 1
            yield self.make(i)


def recipients_of(results: list[SendResult[Message]]) -> list[str]:
    return [r.message.recipients[0] for r in results]


@pytest.mark.parametrize("hosted", [True, False], ids=["async-for", "async-with"])
async def test_close_during_send_many_gives_each_taken_message_one_result(hosted: bool) -> None:
    source = Source(500)
    async with CaptureServer() as server:
        mailer = mailer_for(server, max_connections=2, close_timeout=LONG_CLOSE)
        results: list[SendResult[Any]] = []
        with anyio.fail_after(HANG):
            async with mailer:
                closer: asyncio.Task[None] | None = None

                async def consume(stream: AsyncIterator[SendResult[Any]]) -> None:
                    nonlocal closer
                    async for result in stream:
                        results.append(result)
                        if len(results) == 10 and closer is None:
                            closer = asyncio.create_task(mailer.aclose())

                stream = mailer.send_many(source, concurrency=8)
                if hosted:
                    await consume(stream)
                else:
                    async with stream as own:
                        await consume(own)
                assert closer is not None
                await closer
        stats = mailer.statistics()
        assert 10 <= len(results) == source.taken < 500
        assert sorted(recipients_of(results)) == sorted(
            f"user{i}@example.net" for i in range(source.taken)
        )
        for result in results:
            if result.status is Status.FAILED:
                assert type(result.error) is ShutdownError, repr(result.error)
            else:
                assert result.status is Status.DELIVERED, result
        delivered = [r for r in results if r.status is Status.DELIVERED]
        assert len(server.messages) == len(delivered) == stats.delivered
        assert stats.failed == len(results) - len(delivered)
        assert stats.in_flight == 0
        await still_delivers(server, 9999)


@pytest.mark.parametrize(
    "hosted",
    [
        pytest.param(True, id="async-for"),
        pytest.param(False, id="async-with"),
    ],
)
async def test_breaking_out_of_send_many_leaves_the_mailer_usable(hosted: bool) -> None:
    async with CaptureServer() as server:
        mailer = mailer_for(server, max_connections=2, close_timeout=LONG_CLOSE)
        results: list[SendResult[Any]] = []
        try:
            async with mailer:
                try:
                    with anyio.fail_after(HANG):
                        if hosted:
                            async for result in mailer.send_many(Source(200), concurrency=4):
                                results.append(result)
                                if len(results) == 3:
                                    break
                        else:
                            async with mailer.send_many(Source(200), concurrency=4) as stream:
                                async for result in stream:
                                    results.append(result)
                                    if len(results) == 3:
                                        break
                    await until(lambda: idle_mailer(mailer))
                    with anyio.fail_after(HANG):
                        after = await mailer.send(message(9999))
                        await mailer.aclose()  # bounded: nothing is left in flight
                except BaseException:
                    mailer.close_timeout = SMALL_CLOSE  # a failure must not wait out LONG_CLOSE
                    raise
        finally:
            gc.collect()  # a leaked stream goes while its loop still runs, not in pytest
        stats = mailer.statistics()
        assert len(results) == 3
        assert all(r.status is Status.DELIVERED for r in results)
        assert after.status is Status.DELIVERED
        assert delivered_to(server, 9999) == 1
        assert stats.in_flight == 0
        assert stats.failed == stats.unknown == 0
        await still_delivers(server, 8888)


@pytest.mark.parametrize(
    "size",
    [
        "small",
        "over_64k",
    ],
)
async def test_send_many_turns_a_failing_before_send_into_that_messages_result(size: str) -> None:
    calls: list[int] = []
    disk_full = OSError("disk full")

    def journal(msg: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise disk_full

    def make(i: int) -> Message:
        if size == "small":
            return message(i)
        return message(i, text=("x" * 70 + "\n") * 1200)  # ~85 KiB: the chained, unmerged path

    async with CaptureServer() as server:
        mailer = mailer_for(server, max_connections=2)
        with anyio.fail_after(HANG):
            async with mailer:
                results = [r async for r in mailer.send_many(Source(12, make), before_send=journal)]
        stats = mailer.statistics()
        assert len(results) == 12
        assert len(set(recipients_of(results))) == 12
        [failed] = [r for r in results if r.status is not Status.DELIVERED]
        assert failed.status is Status.FAILED
        assert isinstance(failed.error, PermanentError)
        assert failed.error.__cause__ is disk_full
        assert copies(server, recipients_of([failed])[0]) == 0
        assert len(server.messages) == 11
        assert (stats.delivered, stats.failed, stats.in_flight) == (11, 1, 0)
        await still_delivers(server, 9999)


async def test_send_many_with_a_failing_oauth_provider_fails_each_message_and_leaks_nothing() -> (
    None
):
    async def broken_provider() -> str:
        raise RuntimeError("identity provider down")

    async def working_provider() -> str:
        return "tok"

    tokens = {"u@example.com": "tok"}
    async with CaptureServer(tls="starttls", xoauth2_tokens=tokens) as server:
        mailer = mailer_for(server, username="u@example.com", oauth_token=broken_provider)
        with anyio.fail_after(HANG):
            async with mailer:
                results = [r async for r in mailer.send_many(Source(6))]
        stats = mailer.statistics()
        assert len(results) == 6
        for result in results:
            assert result.status is Status.FAILED
            assert isinstance(result.error, TransientError), repr(result.error)
            assert result.error.retryable
            assert result.error.phase is Phase.AUTH
        assert (stats.delivered, stats.failed, stats.in_flight) == (0, 6, 0)
        assert stats.pool.open == 0
        await until(lambda: server.statistics().open_connections == 0)
        assert server.messages == []
        async with mailer_for(server, username="u@example.com", oauth_token=working_provider) as ok:
            result = await ok.send(message(1))
        assert result.status is Status.DELIVERED
        assert delivered_to(server, 1) == 1


async def test_a_failing_oauth_provider_is_the_cause_of_the_error() -> None:
    failure = RuntimeError("identity provider down")

    async def broken_provider() -> str:
        raise failure

    tokens = {"u@example.com": "tok"}
    async with CaptureServer(tls="starttls", xoauth2_tokens=tokens) as server:
        mailer = mailer_for(
            server, username="u@example.com", oauth_token=broken_provider, retry=ONE_ATTEMPT
        )
        async with mailer:
            with pytest.raises(TransientError) as caught:
                await mailer.send(message(0))
    assert caught.value.__cause__ is failure


def test_a_result_stream_collected_after_its_loop_ended_raises_nothing() -> None:
    async def stream_of_two() -> object:
        async with CaptureServer() as server, mailer_for(server) as mailer:
            stream = mailer.send_many([message(0), message(1)])
            results = [r async for r in stream]
        assert [r.status for r in results] == [Status.DELIVERED] * 2
        return stream

    stream = asyncio.run(stream_of_two())
    unraisable: list[object] = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        del stream
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert unraisable == []


async def test_a_send_cancelled_while_aclose_waits_for_it_lets_aclose_return() -> None:
    """Bug 7: a cancelled send must wake the close that waits for in-flight sends.

    The send is stuck after its dot; aclose() starts waiting for it (close_timeout is
    huge); then the send is cancelled. aclose() must return at once, not after 1000 s.
    """
    async with CaptureServer(faults=[Fault.stall("dot", times=1)]) as server:
        mailer = mailer_for(server, close_timeout=1000)
        async with mailer:
            sending = asyncio.ensure_future(mailer.send(message(0)))
            await until(lambda: bool(server.messages))  # stored: it waits for the dot's reply
            closing = asyncio.ensure_future(mailer.aclose())
            await asyncio.sleep(0)  # aclose() runs to its wait for the send in flight
            assert not closing.done()
            sending.cancel()
            with anyio.fail_after(HANG):
                await closing
            with pytest.raises(asyncio.CancelledError):
                await sending
        assert mailer.statistics().in_flight == 0
        assert mailer.statistics().failed == 0  # a cancelled send is not counted as failed
