"""The workers behind ``send_many``: messages back to back on one held connection.

A worker takes a connection and serves every message that is ready, one transaction
after another. With PIPELINING, the next message's MAIL/RCPT/DATA group is written right
behind the current content and final dot (RFC 2920 allows DATA's content to be followed
by the next group), so a steady stream costs about one round trip per message instead
of two. Messages that need a retry leave the chain and go through the Mailer's ordinary
retry path once the connection is back in the pool.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._exceptions import DeliveryError, SendResult, Status
from ..smtp._connection import Connection
from ..smtp._transaction import Attempt, Prepared, reset, run
from ._job import Job

if TYPE_CHECKING:
    from ._mailer import BeforeSend, Mailer

__all__ = ["Worker", "put", "take"]


class _ConsumerGone(Exception):
    """The caller stopped iterating send_many and closed the results stream."""


async def put(stream: MemoryObjectSendStream[Any], item: Any) -> None:
    """Put an item on a memory stream, waiting (and yielding) only when it is full.

    anyio's ``send`` always yields to the loop first; on the hot path of send_many that
    is several extra loop turns per message for nothing.
    """
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)


async def take(stream: MemoryObjectReceiveStream[Any]) -> Any:
    """Take an item from a memory stream, waiting only when it is empty (EndOfStream at end)."""
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        return await stream.receive()


class Worker:
    """Pulls messages from the queue and sends each result to the results stream."""

    def __init__(
        self,
        mailer: Mailer,
        messages: MemoryObjectReceiveStream[Any],
        results: MemoryObjectSendStream[SendResult],
        before_send: BeforeSend | None,
    ) -> None:
        self.mailer = mailer
        self.messages = messages
        self.results = results
        self.before_send = before_send
        self._ready: list[SendResult] = []  # results made synchronously, sent soon after
        self._held: set[Job] = set()  # jobs taken from the queue and not yet finished

    async def run(self) -> None:
        """Serve until the queue is closed and empty."""
        try:
            await self._serve_all()
        except _ConsumerGone:
            pass  # nobody is left to take results: stop taking messages too
        finally:
            # cancelled (the caller stopped iterating): these will never have a result
            self.mailer._in_flight -= len(self._held)
            self._held.clear()

    async def _serve_all(self) -> None:
        async with self.messages, self.results:
            job: Job | None = None
            while True:
                if job is None:
                    try:
                        message = await take(self.messages)
                    except anyio.EndOfStream:
                        return
                    job = self._job(message)
                    await self._flush()
                    if job is None:
                        continue
                job = await self._serve(job)
                await self._flush()

    def _job(self, message: Any) -> Job | None:
        made = self.mailer._job(message)
        if isinstance(made, SendResult):
            self._ready.append(made)
            return None
        self._held.add(made)
        return made

    def _take_ready(self) -> Job | None:
        """The next message if one is waiting in the queue, without waiting for it."""
        while True:
            try:
                message = self.messages.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                return None
            job = self._job(message)
            if job is not None:
                return job

    async def _flush(self) -> None:
        while self._ready:
            await self._emit(self._ready.pop(0))

    async def _emit(self, result: SendResult) -> None:
        try:
            await put(self.results, result)
        except anyio.BrokenResourceError:
            # The caller broke out of its loop. The scope that cancels the workers may
            # not have reached this task yet: a task whose I/O just finished runs on
            # until its next await, and this put does not await when there is room.
            raise _ConsumerGone from None

    def _begin(self, job: Job) -> None:
        job.announce(self.before_send)
        job.begin()

    async def _serve(self, job: Job) -> Job | None:
        """Send ``job`` and whatever is ready after it on one connection.

        Returns a job taken from the queue but not started, when the connection ended.
        """
        mailer = self.mailer
        retries: list[tuple[Job, Attempt, list[str] | None]] = []
        carry: Job | None = None
        try:
            conn = await mailer._pool.acquire()
        except DeliveryError as exc:
            job.begin()
            await self._settle(job, Attempt(Status.FAILED, error=exc, reusable=False), retries)
        else:
            reusable = False
            try:
                carry, reusable = await self._chain(conn, job, retries)
            finally:
                await mailer._pool.release(conn, reusable=reusable)
        await self._flush()
        for failed, attempt, retry in retries:
            self._held.discard(failed)  # from here _deliver accounts for it
            result = await mailer._deliver(failed, self.before_send, first=attempt, retry=retry)
            await self._emit(result)
        return carry

    async def _chain(
        self, conn: Connection, job: Job, retries: list[tuple[Job, Attempt, list[str] | None]]
    ) -> tuple[Job | None, bool]:
        mailer = self.mailer
        limits = mailer.limits
        limiter = mailer._limiter
        group_sent = False
        tx: Prepared | Attempt = mailer.prepare(conn, job)
        while True:
            following: Job | None = None
            following_tx: Prepared | Attempt | None = None

            def follow() -> bytes | None:
                # called once the content has left: chain the next ready message behind it
                nonlocal following, following_tx
                if limiter is not None or not _has_room(conn, limits.max_messages_per_connection):
                    return None
                following = self._take_ready()
                if following is None:
                    return None
                following_tx = mailer.prepare(conn, following)
                if isinstance(following_tx, Attempt):
                    return None
                self._begin(following)
                return following_tx.group

            if isinstance(tx, Attempt):
                job.begin()
                attempt = tx
            else:
                if not group_sent:
                    if limiter is not None:
                        await limiter.acquire()
                    self._begin(job)
                chained = follow if tx.pipelined else None
                attempt = await run(conn, tx, group_sent=group_sent, follow=chained)
                # (follow() only runs once the content is out, so a transaction that needs
                # RSET never has another chained behind it)
                if attempt.needs_rset and attempt.reusable:
                    attempt.reusable = await reset(conn)
            await self._settle(job, attempt, retries)
            await self._flush()
            if not attempt.reusable:
                if following is not None and isinstance(following_tx, Prepared):
                    following.attempts -= 1  # its envelope went nowhere: not an attempt
                    # (it stays announced: the journal already says it may be on its way)
                return following, False
            if following is None:
                if not _has_room(conn, limits.max_messages_per_connection):
                    return None, True
                following = self._take_ready()
                if following is None:
                    return None, True
                following_tx = mailer.prepare(conn, following)
                group_sent = False
            else:
                group_sent = isinstance(following_tx, Prepared)
            assert following_tx is not None
            job, tx = following, following_tx

    async def _settle(
        self, job: Job, attempt: Attempt, retries: list[tuple[Job, Attempt, list[str] | None]]
    ) -> None:
        """Report a job its first attempt settled; keep the others for the retry path."""
        if attempt.stale:
            retries.append((job, attempt, None))
            return
        retry = job.settle(attempt, retry_unknown=self.mailer.retry.retry_unknown)
        if retry:
            retries.append((job, attempt, retry))
        else:
            self._held.discard(job)
            self._ready.append(self.mailer._finish(job.result(attempt, retry)))


def _has_room(conn: Connection, max_messages: int) -> bool:
    return (
        not conn.is_closed
        and conn.transactions < max_messages
        and time.monotonic() - conn.created_at < conn.limits.max_connection_age
    )
