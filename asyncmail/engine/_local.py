"""Delivery without a socket, for development and tests: ``memory://``, ``console://``,
``file:///dir`` and ``null://``.

A Mailer given one of these URLs (or ``ASYNCMAIL_URL`` set to one) delivers through a
``LocalDriver`` instead of SMTP: the same jobs from the same feeds (``send``,
``send_many``, an outbox's workers), validated, rendered and DKIM-signed the same way,
each ending in one SendResult, DELIVERED with every recipient accepted, the relay being
the URL. Where the message goes is a ``Sink``:

- ``memory://``: a ``SentMessage`` appended to ``MEMORY_OUTBOX`` (``asyncmail.testing.outbox``).
- ``console://``: a summary line and the message's source, printed to standard output.
- ``file:///dir``: one ``.eml`` file per message in ``dir`` (made if missing), written to a
  temporary name and renamed, so a reader never sees half a file.
- ``null://``: nothing kept; only counted.

Each transaction (one per message, or one per recipient for VERP) stores one message,
with the envelope as MAIL FROM and RCPT TO would carry it and the content as the final
dot would end it, without dot-stuffing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

import anyio

from .._config import LOCAL_SCHEMES, RetryPolicy
from .._exceptions import (
    ConfigError,
    DeliveryError,
    MessageError,
    PermanentError,
    Phase,
    SendResult,
    ShutdownError,
    Status,
)
from .._pool import PoolStatistics
from ..message._dsn import DSN
from ..message._envelope import smtp_address
from ..message._parsed import SentMessage
from ..message._verp import expand
from ._driver import Driver, Feed
from ._job import Job, Sign
from ._ledger import Ledger, Signal
from ._mail_outbox import MEMORY_OUTBOX
from ._relays import Relays, RelayStatistics

__all__ = ["NO_POOL", "LocalDriver", "Sink", "sink_of"]


class Sink(Protocol):
    """Where a local Mailer's messages go."""

    display: str
    """The URL, as results and statistics name the relay."""

    async def keep(self, message: SentMessage) -> None:
        """Store one message.

        Raises:
            DeliveryError: It could not be stored.
        """


class MemorySink:
    """Appends to the process-wide outbox (under its lock: any thread may send)."""

    display = "memory://"

    async def keep(self, message: SentMessage) -> None:
        MEMORY_OUTBOX.append(message)


class NullSink:
    """Keeps nothing."""

    display = "null://"

    async def keep(self, message: SentMessage) -> None:
        pass


class ConsoleSink:
    """Prints each message to standard output: a summary line, then its source."""

    display = "console://"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    async def keep(self, message: SentMessage) -> None:
        source = message.data.decode("utf-8", "replace").replace("\r\n", "\n")
        sender = message.envelope_sender or "<>"
        text = (
            f"----- asyncmail console://: {message.subject!r} from {sender} "
            f"to {', '.join(message.recipients)} -----\n{source}"
            f"{'' if source.endswith(chr(10)) else chr(10)}"
            "----- end of message -----\n"
        )
        try:
            with self._lock:  # (looked up each time: a test may have replaced it)
                sys.stdout.write(text)
                sys.stdout.flush()
        except (OSError, ValueError) as exc:  # (ValueError: the stream was closed)
            raise PermanentError(f"could not print the message: {exc}", phase=Phase.DATA) from exc


class FileSink:
    """Writes one ``.eml`` file per message into a directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.display = f"file://{directory}"

    async def keep(self, message: SentMessage) -> None:
        try:
            await anyio.to_thread.run_sync(self._write, message.data)
        except OSError as exc:
            raise PermanentError(
                f"could not write the message into {self.directory}: {exc}", phase=Phase.DATA
            ) from exc

    def _write(self, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        name = f"{stamp}-{uuid.uuid4().hex[:12]}.eml"
        temporary = self.directory / f".{name}.tmp"
        try:
            with open(temporary, "xb") as file:
                file.write(data)
            os.replace(temporary, self.directory / name)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def sink_of(url: str) -> Sink:
    """The sink a local URL names.

    Raises:
        ConfigError: Not a local URL, or one with parts its scheme does not take.
    """
    scheme, sep, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in LOCAL_SCHEMES:
        raise ConfigError(f"not a local URL ({', '.join(f'{s}://' for s in LOCAL_SCHEMES)})")
    if scheme == "file":
        return FileSink(_directory(rest))
    if rest:
        raise ConfigError(f"a {scheme}:// URL takes nothing after '{scheme}://'")
    if scheme == "memory":
        return MemorySink()
    if scheme == "console":
        return ConsoleSink()
    return NullSink()


def _directory(rest: str) -> Path:
    """The directory of ``file://`` + ``rest``: ``/abs/dir``, ``localhost/abs/dir``, ``./rel``."""
    if "?" in rest or "#" in rest:
        raise ConfigError("a file:// URL takes a directory and no options")
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    path = unquote(rest)
    if not path:
        raise ConfigError("a file:// URL needs a directory: file:///path/to/dir")
    return Path(path).absolute()


#: The statistics of the pool a local Mailer does not have.
NO_POOL = PoolStatistics(0, 0, 0, 0, 0, 0, 0)


class LocalDriver(Driver):
    """The session driver of a local Mailer: each job goes to a sink, no relay, no socket.

    It has no relays; ``serve`` takes the place of the SMTP sessions and keeps the rest
    of the contract: every job ends in exactly one result handed to ``feed.emit`` and
    counted in the ledger; a cancelled job leaves the ledger without one.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        ledger: Ledger,
        closing: Signal,
        dsn: DSN | None = None,
        sign: Sign | None = None,
    ) -> None:
        no_relays = Relays([], strategy="failover", retry_period=1.0, clock=time.monotonic)
        super().__init__(
            no_relays,
            retry=RetryPolicy(attempts=1),
            pipelining=False,
            ledger=ledger,
            closing=closing,
            dsn=dsn,
            sign=sign,
        )
        self.sink = sink
        self.counts = dict.fromkeys(Status, 0)

    async def serve(self, feed: Feed) -> None:
        """Deliver every job the feed gives, until it gives None."""
        held: Job | None = None
        try:
            while True:
                job = held = await feed.next()
                if job is None:
                    return
                result = await self._deliver(feed, job)
                held = None
                self.counts[result.status] += 1
                await feed.emit(self.ledger.finish(result))
        finally:
            if held is not None:  # cancelled: it gets no result
                self.ledger.abandon()

    async def _deliver(self, feed: Feed, job: Job) -> SendResult[Any]:
        """Store the job's message; its result."""
        display = self.sink.display
        try:
            if self.closing.fired:
                raise ShutdownError("the Mailer closed before this message was sent")
            job.announce(feed.before_send)
            if feed.limiter is not None:
                await feed.limiter.acquire()
            for sent in _transactions(job):
                if job.gate is not None:
                    await job.gate()
                job.begin(self.clock())
                await self.sink.keep(sent)
        except (DeliveryError, MessageError) as exc:
            error = exc if isinstance(exc, DeliveryError) else PermanentError(str(exc))
            return SendResult(
                message=job.message,
                status=Status.FAILED,
                message_id=job.envelope.message_id,
                refused=dict.fromkeys(job.pending, error),
                attempts=job.attempts,
                error=error,
                relay=display,
            )
        return SendResult(
            message=job.message,
            status=Status.DELIVERED,
            message_id=job.envelope.message_id,
            accepted=tuple(job.pending),
            attempts=1,
            relay=display,
        )

    def statistics(self) -> RelayStatistics:
        """The sink as the one relay of the Mailer's statistics (no pool, no rate)."""
        counts = self.counts
        return RelayStatistics(
            relay=self.sink.display,
            up=True,
            pool=NO_POOL,
            delivered=counts[Status.DELIVERED],
            failed=counts[Status.FAILED],
            unknown=counts[Status.UNKNOWN],
            rate=None,
            max_connections=0,
            throttled=0,
        )


def _transactions(job: Job) -> list[SentMessage]:
    """What the job's transactions would carry: one, or one per recipient for VERP.

    Raises:
        MessageError: An address cannot go in an envelope.
    """
    envelope = job.envelope
    smtputf8 = envelope.needs_smtputf8
    data = job.content_for(smtputf8=smtputf8, eightbitmime=True).raw
    rcpts = [smtp_address(r, smtputf8=smtputf8) for r in job.pending]
    if not envelope.verp:
        sender = smtp_address(envelope.sender, smtputf8=smtputf8) if envelope.sender else ""
        return [SentMessage(envelope_sender=sender, recipients=tuple(rcpts), data=data)]
    return [
        SentMessage(
            envelope_sender=smtp_address(expand(envelope.sender, rcpt), smtputf8=smtputf8),
            recipients=(rcpt,),
            data=data,
        )
        for rcpt in rcpts
    ]
