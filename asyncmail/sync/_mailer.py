"""``SyncMailer``: the Mailer for synchronous code (scripts, Flask, Django views, Celery tasks).

One daemon thread runs one event loop that holds one open ``Mailer``, so its connection pool
stays warm from call to call. Calls from any number of threads are served at once by that
loop through an anyio ``BlockingPortal``. The thread is a daemon so that a forgotten
SyncMailer never holds the interpreter open; an ``atexit`` hook closes each one still open,
so the pool's connections still say QUIT. In a child made by ``fork`` (prefork Celery and
gunicorn workers) an open SyncMailer starts afresh, with connections of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Literal, Self, TypedDict, TypeVar, Unpack

import anyio
from anyio.from_thread import BlockingPortal

from .._config import RetryPolicy, Server, Timeouts
from .._exceptions import MailerClosedError, MailError, SendResult, WrongEventLoopError
from ..dkim._signer import DKIM
from ..engine._mailer import AnyMessage, Mailer, MailerStatistics
from ..engine._ratelimit import RateLimit
from ..engine._relays import Relay, Strategy
from ..message._dsn import DSN
from ..message._raw import RawMessage

__all__ = ["MailerOptions", "SyncMailer"]

logger = logging.getLogger("asyncmail")

M = TypeVar("M", bound=AnyMessage)
T = TypeVar("T")

#: Every SyncMailer whose loop runs: the atexit hook closes them.
_RUNNING: weakref.WeakSet[SyncMailer] = weakref.WeakSet()


class MailerOptions(TypedDict, total=False):
    """The keyword arguments of ``Mailer`` (see its documentation), as ``SyncMailer`` takes them."""

    strategy: Strategy
    retry_period: float
    max_connections: int
    max_messages_per_connection: int
    idle_timeout: float
    max_connection_age: float
    pool_timeout: float
    timeouts: Timeouts | None
    retry: RetryPolicy | None
    rate_limit: str | RateLimit | None
    pipelining: bool
    chunking: bool
    chunking_window: int
    close_timeout: float
    dsn: DSN | None
    dkim: DKIM | Sequence[DKIM] | None


class SyncMailer:
    """A ``Mailer`` for synchronous code: blocking ``send()``, safe to share between threads.

    It takes the same arguments as ``Mailer`` and keeps one Mailer open in an event loop
    running in a background (daemon) thread. Every call, from any thread, is served by
    that one loop, many at once, over the one connection pool, which stays warm between
    calls. Make one per process (a module global, an app extension) and share it.

    The loop starts on first use (``send``, ``send_many``) or on entering ``with``. After
    ``close()`` (or leaving ``with``) every call raises ``MailerClosedError``; a SyncMailer
    still open when the interpreter exits is closed then, so its connections say QUIT.

    From async code use ``Mailer`` itself: calling ``send()`` inside a running event loop
    would block that loop, so it raises ``WrongEventLoopError`` instead.

    Args:
        server: An ``smtp://``/``smtps://`` URL, a ``Server``, or relays, as for
            ``Mailer``; by default ``ASYNCMAIL_URL``.
        **options: ``Mailer``'s keyword arguments (``max_connections``, ``retry``...).

    Raises:
        ConfigError: The configuration is invalid (raised here, before any thread starts).

    ::

        with SyncMailer("smtp://user:pass@smtp.example.com") as mailer:
            result = mailer.send(message)
    """

    def __init__(
        self,
        server: str | Server | Relay | Sequence[str | Server | Relay] | None = None,
        /,
        **options: Unpack[MailerOptions],
    ) -> None:
        self._mailer = Mailer(server, **options)
        self._arguments = (server, options)  # (for a fresh Mailer in a forked child)
        self._lock = threading.Lock()  # guards the state, the start and the close
        self._state: Literal["new", "open", "closed"] = "new"
        self._portal: BlockingPortal | None = None
        self._stop: anyio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def mailer(self) -> Mailer:
        """The Mailer it runs (its settings: ``server``, ``limits``, ``retry``...)."""
        return self._mailer

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open(self) -> BlockingPortal:
        """The portal into the running loop, starting it on first use.

        Raises:
            MailerClosedError: The SyncMailer is closed.
        """
        portal = self._portal
        if self._state == "open" and portal is not None:
            return portal
        with self._lock:
            if self._state == "closed":
                raise MailerClosedError("the SyncMailer is closed")
            if self._state == "new":
                self._start()
            assert self._portal is not None
            return self._portal

    def _start(self) -> None:
        """Start the loop thread and open the Mailer in it (the lock is held)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        async def host() -> None:
            try:
                async with BlockingPortal() as portal, self._mailer:
                    self._stop = anyio.Event()
                    self._portal = portal
                    ready.set()
                    await self._stop.wait()
            except BaseException as exc:
                if not ready.is_set():  # (reported to the thread that started it)
                    failure.append(_unwrapped(exc))
                raise
            finally:
                ready.set()

        def run() -> None:
            try:
                anyio.run(host, backend="asyncio")
            except BaseException:
                if not failure:
                    logger.exception("the SyncMailer's event loop failed")

        self._thread = threading.Thread(
            target=run,
            name=f"asyncmail-sync {self._mailer.statistics().relays[0].relay}",
            daemon=True,
        )
        self._thread.start()
        ready.wait()
        if failure or self._portal is None:
            self._state = "closed"
            self._thread.join()
            raise failure[0] if failure else MailerClosedError("the SyncMailer did not start")
        self._state = "open"
        _RUNNING.add(self)

    def _forked(self) -> None:
        """In a child process made by ``fork`` (a Celery or gunicorn worker): the loop thread
        was not copied, and the Mailer's connections are the parent's. Start afresh on first
        use, never touching them (a QUIT would end the parent's session)."""
        self._lock = threading.Lock()
        if self._state == "open":
            server, options = self._arguments
            self._mailer = Mailer(server, **options)
            self._state = "new"
            self._portal = self._stop = self._thread = None

    def close(self) -> None:
        """Close the Mailer (sends in flight finish, idle connections QUIT) and end the thread.

        Safe to call more than once, and on a SyncMailer never used. Blocks until the
        Mailer has closed: up to its ``close_timeout`` while sends are in flight.
        """
        with self._lock:
            if self._state == "closed":
                return
            was_open = self._state == "open"
            self._state = "closed"
        _RUNNING.discard(self)
        if not was_open:
            return
        portal, stop, thread = self._portal, self._stop, self._thread
        assert portal is not None and stop is not None and thread is not None
        portal.call(stop.set)
        thread.join()

    # -- sending ----------------------------------------------------------------------------

    def send(self, message: M) -> SendResult[M]:
        """Send one message and wait for its result; as ``Mailer.send``.

        Args:
            message: An ``asyncmail.Message``, a ``RawMessage`` or a stdlib
                ``email.message.EmailMessage``.

        Returns:
            The result, when at least one recipient accepted the message.

        Raises:
            MessageError: The message is invalid (raised before any network I/O).
            DeliveryError: Nothing was delivered, or the outcome is unknown; its
                ``result`` holds the SendResult.
            MailerClosedError: The SyncMailer is closed.
            WrongEventLoopError: Called inside a running event loop.
        """
        _refuse_in_event_loop("send")
        mailer = self._mailer

        async def send() -> SendResult[M]:
            return await mailer.send(message)

        return self._call(send)

    def send_raw(
        self,
        data: bytes | bytearray | memoryview,
        *,
        sender: str,
        recipients: str | Iterable[str],
        dsn: DSN | None = None,
        dkim: bool = False,
        resent_from: str | None = None,
    ) -> SendResult[RawMessage]:
        """Send existing message bytes as they are, to the envelope given; as
        ``Mailer.send_raw`` (see ``RawMessage`` for the arguments).

        Raises:
            MessageError: The bytes or an address cannot go unchanged.
            DeliveryError: As ``send``.
            MailerClosedError: The SyncMailer is closed.
            WrongEventLoopError: Called inside a running event loop.
        """
        _refuse_in_event_loop("send_raw")
        message = RawMessage(
            data,
            sender=sender,
            recipients=recipients,
            dsn=dsn,
            dkim=dkim,
            resent_from=resent_from,
        )
        return self.send(message)

    def send_many(
        self, messages: Iterable[M], *, concurrency: int | None = None
    ) -> list[SendResult[M]]:
        """Send many messages at once and wait for all; one result each, in input order.

        One message's failure never raises: it is its result's ``status`` and ``error``.
        The messages are taken into a list first, and the results come back as one list,
        so for millions of messages call it once per chunk (or use ``Mailer.send_many``).

        Args:
            messages: The messages.
            concurrency: Messages sent at once; by default ``max_connections``.

        Returns:
            The SendResults, the i-th for the i-th message.

        Raises:
            ConfigError: ``concurrency`` is not an integer >= 1.
            MailerClosedError: The SyncMailer is closed.
            WrongEventLoopError: Called inside a running event loop.
        """
        _refuse_in_event_loop("send_many")
        batch = list(messages)
        mailer = self._mailer

        async def send_many() -> list[SendResult[M]]:
            async with mailer.send_many(batch, concurrency=concurrency) as results:
                return [result async for result in results]

        return _in_order(batch, self._call(send_many))

    def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        portal = self._open()
        try:
            return portal.call(call)
        except RuntimeError as exc:
            if isinstance(exc, MailError) or self._state != "closed":
                raise
            # closed between our check and the call: the portal had stopped
            raise MailerClosedError("the SyncMailer is closed") from None

    # -- introspection ----------------------------------------------------------------------

    def statistics(self) -> MailerStatistics:
        """A frozen snapshot of the Mailer's outcomes, sends in flight and pool."""
        return self._mailer.statistics()

    def __repr__(self) -> str:
        # (the Mailer's own repr, with its counts and no secrets, inside the SyncMailer's)
        return f"<SyncMailer {self._state} {self._mailer!r}>"


def _refuse_in_event_loop(method: str) -> None:
    """Raise instead of blocking a running event loop (an async view, a notebook).

    Raises:
        WrongEventLoopError: This thread runs an event loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise WrongEventLoopError(
        f"SyncMailer.{method}() was called inside a running event loop, which it would "
        f"block: in async code use an asyncmail.Mailer ('async with Mailer(...) as mailer', "
        f"then 'await mailer.{method}(...)')"
    )


def _unwrapped(exc: BaseException) -> BaseException:
    """The one exception a task group wrapped (an ExceptionGroup never reaches a caller)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _in_order(messages: list[M], results: list[SendResult[M]]) -> list[SendResult[M]]:
    """The results of ``send_many`` (in completion order) in the order of their messages."""
    where: dict[int, list[int]] = {}
    for i, message in enumerate(messages):
        where.setdefault(id(message), []).append(i)
    ordered: list[SendResult[M] | None] = [None] * len(messages)
    for result in results:
        ordered[where[id(result.message)].pop(0)] = result
    assert all(r is not None for r in ordered)
    return [r for r in ordered if r is not None]


def _after_fork_in_child() -> None:
    for mailer in list(_RUNNING):
        mailer._forked()  # noqa: SLF001 (the module's own class)
    _RUNNING.clear()


if hasattr(os, "register_at_fork"):  # (not on Windows)
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_forgotten() -> None:
    """Close every SyncMailer still open at exit, so its connections QUIT."""
    for mailer in list(_RUNNING):
        mailer.close()
