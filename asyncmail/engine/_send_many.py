"""``send_many``: a stream of messages in, one SendResult per message out, in completion order.

A ``ResultStream`` owns its task group: workers deliver the caller's input, read lazily,
through the Mailer's one session driver. A plain iterable is read by the workers
themselves, one message when one can go; an async iterable (or any input with DKIM) is read
by a feeder task into a bounded queue the workers take from. Use it
as ``async with mailer.send_many(msgs) as results: async for r in results`` (the tasks live
in the caller's task) or as a plain ``async for`` (they live in the Mailer's task group).
Either way a failure reaches the consumer, never the Mailer: the caller's iterable raising
ends the stream with that exception once every message already taken has its result.

Breaking out, ``aclose()``, leaving the ``async with`` or dropping the iterator stops the
workers; messages on their way then have no result (the caller stopped listening).
"""

from __future__ import annotations

import contextlib
import weakref
from collections import deque
from collections.abc import AsyncIterable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._config import RetryPolicy
from .._exceptions import MailerClosedError, MessageError, SendResult, ShutdownError, Status
from ._job import MESSAGE_TYPES, BeforeSend, Job
from ._ratelimit import Limiter

if TYPE_CHECKING:
    from ._driver import Driver

__all__ = ["ResultStream"]

Messages = Iterable[object] | AsyncIterable[object]
#: The message type of a stream: its results carry the messages as they were given.
M = TypeVar("M")


class _ConsumerGone(Exception):
    """The caller stopped listening: nobody takes results any more."""


class _Source(Protocol):
    """Where the workers take messages from: the feeder's queue, or the input itself."""

    def receive_nowait(self) -> object: ...

    async def receive(self) -> object: ...


class _Pull:
    """A plain iterable, read by the workers themselves: no feeder task, no queue between.

    A message is taken only when a worker can send it; taken, it gets a result. Reading
    stops once the Mailer closes or the consumer stops listening, and the iterable
    raising ends the input (the stream then ends with that exception).
    """

    def __init__(self, work: _Work, messages: Iterable[object]) -> None:
        self._work = work
        self._it: Iterator[object] | None = None
        try:
            self._it = iter(messages)
        except Exception as exc:  # the caller's iterable failed: their exception
            work.failure = exc

    def receive_nowait(self) -> object:
        """The next message; ``EndOfStream`` when there is none to take."""
        work = self._work
        if self._it is None or work.stopped or work.driver.closing.fired:  # (``done``)
            self._it = None
            raise anyio.EndOfStream
        try:
            return next(self._it)
        except StopIteration:
            pass
        except Exception as exc:  # the caller's iterable failed: their exception
            self._work.failure = exc
        self._it = None
        raise anyio.EndOfStream

    async def receive(self) -> object:
        return self.receive_nowait()


class _Queue:
    """The feeder's messages, for the workers: a bounded FIFO, cheap per message.

    An anyio memory stream costs a checkpoint and a wake-up each time the feeder finds it
    full; here the feeder, once the queue is full, sleeps until the workers have taken half
    of it, and a worker waits (and is woken) only when the queue is empty.
    """

    def __init__(self, size: int) -> None:
        self._items: deque[object] = deque()
        self._size = size
        self._closed = False
        self._room: anyio.Event | None = None  # the feeder waits for room
        self._waiting: deque[anyio.Event] = deque()  # workers wait for a message
        self.receivers = 0  # the workers still taking

    # -- the feeder's side ------------------------------------------------------------------

    def put(self, item: object) -> bool:
        """Queue ``item``; False when the queue is now full (or no worker takes any more)."""
        self._items.append(item)
        if self._waiting:
            self._waiting.popleft().set()
        return len(self._items) < self._size and self.receivers > 0

    async def room(self) -> bool:
        """Wait until the workers took half of a full queue; False once no worker takes."""
        if len(self._items) >= self._size and self.receivers:
            self._room = room = anyio.Event()
            await room.wait()
        return self.receivers > 0

    def close(self) -> None:
        """No more messages: a worker finding the queue empty then gets ``EndOfStream``."""
        self._closed = True
        while self._waiting:
            self._waiting.popleft().set()

    # -- the workers' side ------------------------------------------------------------------

    def receive_nowait(self) -> object:
        """The next message; ``WouldBlock`` if none is queued yet, ``EndOfStream`` at the end."""
        items = self._items
        if items:
            item = items.popleft()
            room = self._room
            if room is not None and len(items) <= self._size // 2:
                self._room = None
                room.set()
            return item
        if self._closed:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def receive(self) -> object:
        while True:
            try:
                return self.receive_nowait()
            except anyio.WouldBlock:
                pass
            woken = anyio.Event()
            self._waiting.append(woken)
            try:
                await woken.wait()
            except BaseException:
                if woken.is_set():  # woken for a message it will not take: pass it on
                    if self._waiting:
                        self._waiting.popleft().set()
                else:
                    self._waiting.remove(woken)
                raise

    def leave(self) -> None:
        """A worker stopped taking; the last one to leave wakes the feeder (to stop it)."""
        self.receivers -= 1
        if not self.receivers and self._room is not None:
            self._room.set()


class _QueueFeed:
    """A worker's feed: messages from the shared source, results to the shared stream."""

    retry: RetryPolicy | None = None
    limiter: Limiter | None = None

    def __init__(
        self,
        driver: Driver,
        messages: _Source,
        results: MemoryObjectSendStream[SendResult[Any]],
        before_send: BeforeSend | None,
    ) -> None:
        self.driver = driver
        self.messages = messages
        self.results = results
        self.before_send = before_send
        self._early: list[SendResult[Any]] = []  # results made without I/O, not yet emitted

    async def next(self) -> Job | None:
        while True:
            if self._early:
                await self._flush()
            try:
                message = self.messages.receive_nowait()
            except anyio.WouldBlock:
                try:
                    message = await self.messages.receive()
                except anyio.EndOfStream:
                    return None
            except anyio.EndOfStream:
                return None
            job = self._job(message)
            if job is not None:
                return job

    def ready(self) -> Job | None:
        while True:
            try:
                message = self.messages.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                return None
            job = self._job(message)
            if job is not None:
                return job

    def _job(self, message: object) -> Job | None:
        """A Job, or None when the message ended at once (invalid, or the Mailer closing)."""
        ledger = self.driver.ledger
        ledger.admit()
        made = message if isinstance(message, Job) else None  # (signed by the feeder)
        if made is not None:
            message = made.message
        try:
            if self.driver.closing.fired:
                raise ShutdownError("the Mailer closed before this message was sent")
            if made is not None:
                return made
            if not isinstance(message, MESSAGE_TYPES):
                raise MessageError(
                    f"message: expected a Message, RawMessage or EmailMessage, got {message!r}"
                )
            return Job.of(message, sign=self.driver.sign)
        except (MessageError, ShutdownError) as exc:
            result = SendResult(message=message, status=Status.FAILED, error=exc)
            self._early.append(ledger.finish(result))
            return None

    async def emit(self, result: SendResult[Any]) -> None:
        if self._early:
            await self._flush()
        try:
            self.results.send_nowait(result)  # (the common case: room, and nothing to await)
        except anyio.WouldBlock:
            await self._put(result)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise _ConsumerGone from None

    async def _flush(self) -> None:
        while self._early:
            await self._put(self._early.pop(0))

    async def _put(self, result: SendResult[Any]) -> None:
        try:
            try:
                self.results.send_nowait(result)
            except anyio.WouldBlock:
                await self.results.send(result)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            # The caller broke out; the cancel that stops this worker may not have
            # reached it yet (a task whose I/O just finished runs to its next await).
            raise _ConsumerGone from None


class _Work:
    """The tasks behind one ResultStream. They hold this, never the ResultStream itself, so
    dropping the stream (a bare ``break``) lets it be collected, which stops them."""

    def __init__(
        self,
        driver: Driver,
        messages: Messages,
        workers: int,
        before_send: BeforeSend | None,
    ) -> None:
        self.driver = driver
        self.messages = messages
        self.workers = workers
        self.before_send = before_send
        send, receive = anyio.create_memory_object_stream[SendResult[Any]](workers)
        self.results_in: MemoryObjectSendStream[SendResult[Any]] = send
        self.results: MemoryObjectReceiveStream[SendResult[Any]] = receive
        self.scope = anyio.CancelScope()
        self.stopped = False  # stop() was called (a plain attribute: read per message)
        self.failure: BaseException | None = None

    def stop(self) -> None:
        """Cancel the workers and close the results; safe to call again, and with no loop."""
        self.stopped = True
        self.results.close()  # a worker already past its await stops on a closed stream
        self.results_in.close()  # (the workers hold clones; this one is only for them)
        # the others at their next await (no running loop: it ended, and the tasks with it)
        with contextlib.suppress(RuntimeError):
            self.scope.cancel()

    async def run(self) -> None:
        messages = self.messages
        try:
            with self.scope:
                async with anyio.create_task_group() as tg:
                    if isinstance(messages, AsyncIterable) or self.driver.sign is not None:
                        queue = _Queue(self.workers)
                        queue.receivers = self.workers
                        tg.start_soon(self._feed, queue)
                        for _ in range(self.workers):
                            tg.start_soon(self._work, queue, self.results_in.clone())
                    else:
                        pull = _Pull(self, messages)
                        for _ in range(self.workers):
                            tg.start_soon(self._work, pull, self.results_in.clone())
        finally:
            self.results_in.close()

    def done(self) -> bool:
        """Stop reading the input: the Mailer is closing, or the consumer stopped listening."""
        return self.driver.closing.fired or self.stopped

    async def _feed(self, queue: _Queue) -> None:
        # (a put that does not wait does not see a cancel: hence the check after each one)
        try:
            sign = self.driver.sign is not None
            if isinstance(self.messages, AsyncIterable):
                async for message in self.messages:
                    # (taken: it gets a result, maybe FAILED)
                    queued = queue.put(await self._signed(message) if sign else message)
                    if not queued and not await queue.room():  # (full: wait for room)
                        break
                    if self.done():
                        break
            else:
                for message in self.messages:
                    queued = queue.put(await self._signed(message) if sign else message)
                    if not queued and not await queue.room():  # (full: wait for room)
                        break
                    if self.done():
                        break  # what is queued ends FAILED (ShutdownError)
        except Exception as exc:  # the caller's iterable failed: their exception
            self.failure = exc
        finally:
            queue.close()

    async def _signed(self, message: object) -> object:
        """With DKIM, the message's job, made (and signed) here and not by the workers.

        One task signs, one message per turn of the event loop: a signature takes about a
        millisecond, and workers each signing in the same turn would stall the loop for
        as many. A message that is not valid goes on as it is: its worker reports it.
        """
        sign = self.driver.sign
        if not isinstance(message, MESSAGE_TYPES):
            return message
        try:
            job: object = Job.of(message, sign=sign)
        except MessageError:
            job = message
        await anyio.lowlevel.checkpoint()
        return job

    async def _work(
        self, messages: _Queue | _Pull, results: MemoryObjectSendStream[SendResult[Any]]
    ) -> None:
        # (one coroutine from the task to ``serve``: each level is resumed on every wake-up)
        feed = _QueueFeed(self.driver, messages, results, self.before_send)
        async with results:
            try:
                # a gone consumer takes no results: stop taking messages too
                with contextlib.suppress(_ConsumerGone):
                    await self.driver.serve(feed)
            finally:
                if isinstance(messages, _Queue):
                    messages.leave()


class ResultStream(Generic[M]):
    """The results of ``send_many``: an async iterator, and an async context manager."""

    def __init__(
        self,
        driver: Driver,
        messages: Messages,
        *,
        workers: int,
        before_send: BeforeSend | None,
        host: TaskGroup | None,
    ) -> None:
        self._work = _Work(driver, messages, workers, before_send)
        self._host = host
        self._own: TaskGroup | None = None
        self._started = False
        # dropped without aclose (a bare break out of async for): stop the workers
        weakref.finalize(self, self._work.stop)

    # -- the async context manager: the tasks live in the caller's task -------------------

    async def __aenter__(self) -> Self:
        self._own = anyio.create_task_group()
        await self._own.__aenter__()
        self._start(self._own)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
        own, self._own = self._own, None
        if own is not None:
            await own.__aexit__(None, None, None)

    # -- the async iterator -----------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SendResult[M]:
        if not self._started:
            if self._host is None:
                raise MailerClosedError(
                    "iterating send_many() needs the Mailer open: use 'async with Mailer()', "
                    "or 'async with mailer.send_many(...) as results'"
                )
            self._start(self._host)
        results = self._work.results
        try:
            try:
                return results.receive_nowait()
            except anyio.WouldBlock:
                return await results.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            failure, self._work.failure = self._work.failure, None
            if failure is not None:
                raise failure from None
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop: the workers are cancelled and no more results come."""
        self._work.stop()

    def _start(self, group: TaskGroup) -> None:
        self._started = True
        group.start_soon(self._work.run)
