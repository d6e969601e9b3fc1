"""The Outbox: ``enqueue`` returns once a message is durable; workers deliver it later.

::

    outbox = Outbox("sqlite:////var/lib/shop/mail.db")   # or "redis://host:6379/0?queue=mail"
    async with outbox:
        await outbox.enqueue(message, key="reset:42")

    async with Mailer(url) as mailer, outbox, outbox.deliver(mailer, concurrency=10):
        ...   # delivering in this process (a web app's lifespan) until the block ends
"""

from __future__ import annotations

import copy
import email.message
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import Self

import anyio

from .._config import RetryPolicy
from .._exceptions import ConfigError, MailerClosedError, MessageError
from ..dkim._signer import DKIM, signers_of
from ..engine._job import Job
from ..engine._mailer import Mailer
from ..engine._ratelimit import RateLimit
from ..message._headers import check_header_name, check_text
from ..message._message import Message
from ..message._raw import RawMessage
from ..suppression._model import Suppressions
from ._codec import encode
from ._deliver import Delivery, PatientLimiter, Telemetry
from ._model import (
    FINAL_STATES,
    SUPPRESSED,
    NewEntry,
    OutboxStatistics,
    OutboxStatus,
    Refusal,
    State,
    lane_of,
)
from ._open import open_store
from ._plan import DEFAULT_RETRY
from ._store import Store
from ._suppressions import StoreSuppressions
from ._telemetry import combine, default_telemetry

__all__ = ["Outbox"]

DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_GRACE = 30.0
#: Seconds added to every period of a shared rate limit (see ``deliver``'s ``rate``).
JITTER_SLACK = 0.05
MAX_KEY_LENGTH = 512
#: A suppressed recipient's refusal, and the error of a message left with no recipient.
SUPPRESSED_TEXT = SUPPRESSED + "on the suppression list; not sent"
SUPPRESSED_ALL = SUPPRESSED + "every recipient is on the suppression list; not sent"


class Outbox:
    """A durable queue of messages, in SQLite (one machine) or Redis (many machines).

    Args:
        url: ``sqlite:////absolute/path.db`` (the embedded default) or
            ``redis://[:password@]host:6379/0?queue=NAME``.
        retry: When transient failures are tried again; the schedule is kept in the store.
            By default up to 30 attempts over 3 days, backing off to 10 minutes.
        resend_unknown: Send a message again whose worker died, or was cut off, after its
            final dot may have left (at-least-once; it keeps its Message-ID). By default
            such a message ends UNKNOWN and is never sent twice.
        idempotency_header: A header to stamp with the enqueue key, for relays that drop
            a second message with the same value (for example ``"Resend-Idempotency-Key"``).
        lease_seconds: How long a worker holds a message without renewing its lease; a
            dead worker's messages go to another one after this long.
        telemetry: Where ``enqueue`` and every delivery report (see ``_telemetry``). By
            default OpenTelemetry spans when ``opentelemetry-api`` is installed, else nothing.
        suppression: The suppression list to honour: ``True`` for this outbox's own
            (``outbox.suppressions``, in its store), or any ``Suppressions`` (such as a
            ``CsvSuppressions``). ``enqueue`` leaves listed recipients out (a message left
            with none is stored FAILED, never sent), and the workers add every recipient
            that a server refuses as non-existent (5.1.x at RCPT). Off by default: turning
            it on changes who gets mail, which an upgrade must not do unasked.
        dkim: Sign each message at enqueue with this DKIM signer (or each of these): the
            stored bytes carry the signature, so every attempt, from any worker, sends the
            same. A worker whose Outbox or Mailer has ``dkim=`` signs what a stored message
            lacks (so a worker may own the key instead of the application).
    """

    def __init__(
        self,
        url: str,
        *,
        retry: RetryPolicy | None = None,
        resend_unknown: bool = False,
        idempotency_header: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        telemetry: Telemetry | None = None,
        suppression: bool | Suppressions | None = None,
        dkim: DKIM | Sequence[DKIM] | None = None,
    ) -> None:
        self.sign = signers_of(dkim)
        self.store: Store = open_store(url)
        self.suppressions: Suppressions = StoreSuppressions(self.store)
        """This outbox's own suppression list (honoured only with ``suppression=True``)."""
        if suppression is True:
            self.suppression: Suppressions | None = self.suppressions
        elif suppression is None or suppression is False:
            self.suppression = None
        elif callable(getattr(suppression, "suppressed", None)):
            self.suppression = suppression
        else:
            raise ConfigError(
                f"suppression must be True, False, None or a Suppressions, not {suppression!r}"
            )
        self.retry = retry or DEFAULT_RETRY
        self.resend_unknown = resend_unknown
        if idempotency_header is not None:
            idempotency_header = check_header_name(idempotency_header, "idempotency_header")
            idempotency_header = _header_spelling(idempotency_header)
        self.idempotency_header = idempotency_header
        if not lease_seconds > 0 or math.isinf(lease_seconds):
            raise ConfigError("lease_seconds must be a positive number of seconds")
        self.lease_seconds = lease_seconds
        self.telemetry = telemetry if telemetry is not None else default_telemetry()
        self._state = "new"

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise MailerClosedError("an Outbox can be entered once; create a new one")
        await self.store.open()
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._state == "open":
            self._state = "closed"
            with anyio.CancelScope(shield=True):
                await self.store.aclose()
        self._state = "closed"

    def _check_open(self) -> None:
        if self._state != "open":
            raise MailerClosedError("the Outbox is not open: use it in 'async with'")

    def __repr__(self) -> str:
        return f"<Outbox {self.store.url} {self._state}>"

    # -- enqueue --------------------------------------------------------------------------

    async def enqueue(
        self,
        message: Message | RawMessage | email.message.Message,
        *,
        key: str | None = None,
        priority: str = "normal",
        not_before: datetime | None = None,
    ) -> OutboxStatus:
        """Store ``message`` for delivery; returns once it is durable.

        Args:
            message: The message; validated here, before anything is stored.
            key: Makes this idempotent: a second enqueue with the same key stores nothing
                and returns the first message's status. A fresh one by default.
            priority: ``"high"``, ``"normal"`` or ``"low"``; a higher lane always goes first.
            not_before: Do not send before this (timezone-aware) time.

        With ``suppression`` on, recipients on the list are left out: the status says which
        (``status.suppressed``); a message left with none is stored FAILED and never sent.

        Raises:
            MessageError: The message is invalid (nothing is stored).
            ConfigError: A bad key, priority or time (or an unreadable suppression file).
            OutboxError: The store failed.
        """
        self._check_open()
        lane = lane_of(priority)
        now = time.time()
        due = now if not_before is None else _epoch(not_before)
        if key is None:
            key = uuid.uuid4().hex
        elif not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            raise ConfigError(f"key must be a non-empty string of <= {MAX_KEY_LENGTH} chars")
        else:
            check_text(key, "key")
        if not isinstance(message, Message | RawMessage | email.message.Message):
            raise MessageError(
                f"message: expected a Message, RawMessage or EmailMessage, got {message!r}"
            )
        if self.idempotency_header is not None and not isinstance(message, RawMessage):
            message = _stamped(message, self.idempotency_header, key)
        job = Job.of(message, sign=self.sign)  # validates, renders, signs: nothing bad is stored
        envelope = job.envelope
        message_id = envelope.message_id or ""
        content = job.content_for(smtputf8=envelope.needs_smtputf8, eightbitmime=True)
        recipients, refused, error = await self._suppress(envelope.recipients)
        entry = NewEntry(
            key=key,
            payload=encode(message, envelope, content),
            message_id=message_id,
            recipients=recipients,
            lane=lane,
            due=due,
            enqueued_at=now,
            refused=refused,
            error=error,
        )
        created, status = await self.store.enqueue(entry)
        if self.telemetry is not None:
            self.telemetry.enqueued(key, created, time.time() - now)
        return status

    async def _suppress(
        self, recipients: tuple[str, ...]
    ) -> tuple[tuple[str, ...], dict[str, Refusal], str | None]:
        """The recipients to send to, the suppressed ones' refusals, and the error if none."""
        if self.suppression is None:
            return recipients, {}, None
        listed = await self.suppression.suppressed(recipients)
        if not listed:
            return recipients, {}, None
        refusal = Refusal(None, SUPPRESSED_TEXT, retryable=False)
        refused = {r: refusal for r in recipients if r in listed}
        kept = tuple(r for r in recipients if r not in listed)
        return kept, refused, None if kept else SUPPRESSED_ALL

    # -- delivery -------------------------------------------------------------------------

    def deliver(
        self,
        mailer: Mailer,
        *,
        concurrency: int = 10,
        rate: str | RateLimit | None = None,
        grace: float = DEFAULT_GRACE,
        telemetry: Telemetry | None = None,
    ) -> Delivering:
        """Deliver this outbox's messages through ``mailer`` while the block runs.

        ``async with outbox.deliver(mailer):`` starts ``concurrency`` workers in the
        background; leaving the block stops them gracefully: nothing new is taken, the
        messages leased but not started go back to the store at once, and the sends in
        progress get ``grace`` seconds to finish.

        Args:
            mailer: An open Mailer.
            concurrency: Messages in flight at most.
            rate: One limit for every worker of this outbox, on every machine (``"200/s"``).
                It holds as the relay sees it: each period is paced 50 ms longer than it
                must be, so that scheduling and network jitter, which bunch messages up on
                their way, do not push any window of the relay's over the limit (about 5%
                below the nominal rate for a per-second limit, nothing for per-hour ones).
            grace: Seconds the sends in progress get when stopping.
            telemetry: Where to report metrics and traces, besides the outbox's own.
        """
        self._check_open()
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency must be an integer >= 1, not {concurrency!r}")
        limiter: PatientLimiter | None = None
        if rate is not None:
            limit = RateLimit.parse(rate)
            # the relay counts arrivals, which scheduling and network jitter bunch up: the
            # shared limiter paces every period to end JITTER_SLACK later than it must
            shared = self.store.limiter(replace(limit, per=limit.per + JITTER_SLACK))
            limiter = PatientLimiter(shared, self.store.url)
        delivery = Delivery(
            self.store,
            mailer.driver,
            concurrency=concurrency,
            limiter=limiter,
            retry=self.retry,
            lease_seconds=self.lease_seconds,
            resend_unknown=self.resend_unknown,
            telemetry=combine(self.telemetry, telemetry),
            suppressions=self.suppression,
            sign=signers_of(self.sign, mailer.dkim),
        )
        return Delivering(delivery, grace)

    # -- for operators --------------------------------------------------------------------

    async def status(self, key: str) -> OutboxStatus | None:
        """What the outbox knows of the message enqueued under ``key``; None if nothing."""
        self._check_open()
        return await self.store.status(key)

    async def statistics(self) -> OutboxStatistics:
        """Counts by state, the age of the oldest waiting message, and the current rate."""
        self._check_open()
        return await self.store.statistics()

    async def entries(
        self, state: State | str | None = None, limit: int = 100
    ) -> list[OutboxStatus]:
        """Up to ``limit`` messages (in ``state``, or any), the most recently changed first."""
        self._check_open()
        return await self.store.entries(State(state) if state is not None else None, limit)

    async def retry_failed(self, keys: Sequence[str] | None = None) -> int:
        """Queue FAILED and UNKNOWN messages again (those of ``keys``, or all); how many."""
        self._check_open()
        return await self.store.retry(keys)

    async def purge(
        self, states: Sequence[State | str] = tuple(FINAL_STATES), *, older_than: float = 0.0
    ) -> int:
        """Delete final messages (of ``states``) that ended ``older_than`` seconds ago or more."""
        self._check_open()
        chosen = [State(s) for s in states]
        if any(s not in FINAL_STATES for s in chosen):
            raise ConfigError("only final states (delivered, failed, unknown) can be purged")
        return await self.store.purge(chosen, older_than)


class Delivering:
    """``Outbox.deliver``'s context: workers run in the background while it is entered."""

    def __init__(self, delivery: Delivery, grace: float) -> None:
        self.delivery = delivery
        self.grace = grace
        self._group: anyio.abc.TaskGroup | None = None
        self._stopped = anyio.Event()

    async def __aenter__(self) -> Delivery:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._run)
        return self.delivery

    async def _run(self) -> None:
        try:
            await self.delivery.run()
        finally:
            self._stopped.set()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        group, self._group = self._group, None
        assert group is not None
        self.delivery.stop()
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.grace):
            await self._stopped.wait()
        group.cancel_scope.cancel()  # (what is still running is cut off; see Delivery)
        await group.__aexit__(None, None, None)
        return None


def _epoch(moment: datetime) -> float:
    if not isinstance(moment, datetime):
        raise ConfigError(f"not_before must be a datetime, not {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigError("not_before must be timezone-aware (datetime.now(UTC) + ...)")
    return moment.timestamp()


def _header_spelling(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def _stamped(
    message: Message | email.message.Message, name: str, key: str
) -> Message | email.message.Message:
    """``message`` with the idempotency header set to ``key`` (a copy; the input is kept)."""
    if isinstance(message, Message):
        headers: list[tuple[str, str]] = [
            (n, v) for n, v in message.headers if n.lower() != name.lower()
        ]
        return replace(message, headers=(*headers, (name, key)))
    stamped = copy.deepcopy(message)
    del stamped[name]
    stamped[name] = key
    return stamped
