"""One batch run: recipients through a template into the Mailer, journaled ahead of each send.

The order of events for one recipient is what makes ``--resume`` safe after a ``kill -9``:

1. the row is read, numbered among the rows of its address (see ``batch._journal``: a
   recipient is its address and occurrence, never its row number) and rendered (a bad row is
   journaled ``F`` and never sent);
2. ``before_send`` journals ``S`` and flushes, right before the first SMTP transaction;
3. the result is journaled ``D``, ``F`` or ``U``.

With ``--dedupe``, a later row of an address already listed (ignoring case) is journaled
``K`` (duplicate) and not sent; a resumed run decides again.

With ``--suppress``, a row whose address is on the suppression list is journaled ``X``
(suppressed) instead of being rendered and sent; a resumed run looks it up again. Recipients
a server refuses as non-existent (5.1.x at RCPT) are added to the list as they come.

A resumed run never sends a recipient whose last line is ``D``, nor one whose last line is
``S`` or ``U`` (it may have been delivered) unless ``resend_unknown`` is set, wherever its row
moved in the list meanwhile. Failed ones are tried again. The report CSV is rebuilt from the
journal at the end of every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._config import RetryPolicy
from .._exceptions import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    MailError,
    MessageError,
    OutboxError,
    SendResult,
    Status,
    TLSError,
)
from ..batch._duplicates import FirstRows
from ..batch._journal import (
    DELIVERED,
    STARTED,
    UNKNOWN,
    Journal,
    JournalState,
    Occurrences,
    ReportRow,
    identity,
    journal_path,
    write_report,
)
from ..batch._recipients import BadRow, Recipient, count_rows, read_recipients
from ..batch._template import Template
from ..dkim._signer import DKIM
from ..engine._mailer import Mailer
from ..message._message import Message
from ..suppression._model import Suppression, Suppressions, hard_bounces
from ._counts import Counts
from ._suppress import open_suppressions

_SERVER_ERRORS = (ConnectError, AuthenticationError, TLSError)
SUPPRESSED_REPLY = "on the suppression list; not sent"
DUPLICATE_REPLY = "the same address as row"
logger = logging.getLogger("asyncmail")

__all__ = [
    "BatchOptions",
    "BatchUsageError",
    "Counts",
    "outbox_marker",
    "run_batch",
]


YIELD_EVERY = 500
# After a second Ctrl-C, how long sends still on the wire get before their connections are
# dropped (they are reported UNKNOWN). The first Ctrl-C waits for them without a limit.
ABORT_GRACE = 2.0
# The batch stops when this many sends in a row (at least) failed to reach the server at all
# and nothing was delivered since: a wrong URL or password should not burn through the list.
GIVE_UP_AFTER = 20


class BatchUsageError(Exception):
    """The batch cannot start as asked (exit code 2); nothing was sent."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchOptions:
    """What ``asyncmail batch`` was asked to do."""

    recipients: Path
    template: Template
    sender: str
    url: str | None
    report: Path
    resume: bool = False
    resend_unknown: bool = False
    concurrency: int = 10
    rate: str | None = None
    attempts: int = 3
    suppress: str | None = None
    """A suppression list to honour and feed: a CSV file's path or an outbox's URL."""
    dkim: tuple[DKIM, ...] = ()
    """DKIM signers for every message (``--dkim``)."""
    delimiter: str | None = None
    """The CSV delimiter; None reads it off the header line."""
    dedupe: bool = False
    """Send each address once: later rows of an address are journaled as duplicates."""


def outbox_marker(report: Path) -> Path:
    """The file that says a batch went into an outbox (``batch --outbox``; see ``_enqueue``)."""
    return report.with_name(report.name + ".outbox")


def _result_row(recipient: Recipient, occurrence: int, result: SendResult[Any]) -> ReportRow:
    error = result.error
    if result.status is Status.DELIVERED or error is None:
        reply = result.reply
        return ReportRow(
            row=recipient.row,
            email=recipient.email,
            occurrence=occurrence,
            status=result.status.value,
            smtp_code=reply.code if reply else None,
            enhanced_code=reply.enhanced_code if reply else None,
            reply=reply.text if reply else "",
            message_id=result.message_id,
            attempts=result.attempts,
        )
    return ReportRow(
        row=recipient.row,
        email=recipient.email,
        occurrence=occurrence,
        status=result.status.value,
        smtp_code=getattr(error, "code", None),
        enhanced_code=getattr(error, "enhanced_code", None),
        reply=getattr(error, "text", None) or str(error),
        message_id=result.message_id,
        attempts=result.attempts,
    )


class _Run:
    def __init__(
        self,
        options: BatchOptions,
        counts: Counts,
        stop: asyncio.Event,
        suppressions: Suppressions | None = None,
    ) -> None:
        self.options = options
        self.suppressions = suppressions
        self.bounced: list[Suppression] = []  # hard bounces not yet added to the list
        self.counts = counts
        self.stop = stop
        self.journal: Journal | None = None
        self.state = JournalState()
        self.occurrences = Occurrences()
        # id(message) -> the message (kept alive so its id stays unique), its row, occurrence
        self.pending: dict[int, tuple[Message, Recipient, int]] = {}
        self.started: set[int] = set()
        self.server_failures = 0
        self.first_rows = FirstRows() if options.dedupe else None

    def open(self) -> None:
        options = self.options
        marker = outbox_marker(options.report)
        if marker.exists():
            raise BatchUsageError(
                f"{marker} exists: this batch was enqueued into an outbox, which sends it. "
                "Run it again with --outbox (nothing is enqueued twice)."
            )
        jpath = journal_path(options.report)
        exists = jpath.exists() and jpath.stat().st_size > 0
        if exists and not options.resume:
            raise BatchUsageError(
                f"{jpath} exists: a batch already ran with this report. Continue it with "
                f"--resume {options.report}, or delete {jpath} to start over "
                "(recipients it reached would get a second copy)."
            )
        if exists:
            self.state = JournalState.replay(jpath)
        self.journal = Journal(jpath)
        if exists and not options.resend_unknown:  # maybe delivered: never re-sent unasked
            for unknown in self.state.in_flight():
                self.journal.finished(unknown)
                self.state.record(identity(unknown.email, unknown.occurrence), UNKNOWN)

    def _finish(self, row: ReportRow) -> None:
        assert self.journal is not None
        self.journal.finished(row)
        if row.status == "delivered":
            self.counts.delivered += 1
        elif row.status == "failed":
            self.counts.failed += 1
        else:
            self.counts.unknown += 1

    def _fail(self, item: Recipient | BadRow, occurrence: int, reason: str) -> None:
        self._finish(
            ReportRow(
                row=item.row,
                email=item.email,
                occurrence=occurrence,
                status="failed",
                reply=reason,
            )
        )

    def _suppressed(self, item: Recipient, occurrence: int) -> None:
        assert self.journal is not None
        self.journal.finished(
            ReportRow(
                row=item.row,
                email=item.email,
                occurrence=occurrence,
                status="suppressed",
                reply=SUPPRESSED_REPLY,
            )
        )
        self.counts.suppressed += 1

    def _duplicate(self, item: Recipient, occurrence: int, first_row: int) -> None:
        assert self.journal is not None
        self.journal.finished(
            ReportRow(
                row=item.row,
                email=item.email,
                occurrence=occurrence,
                status="duplicate",
                reply=f"{DUPLICATE_REPLY} {first_row}; not sent (--dedupe)",
            )
        )
        self.counts.duplicates += 1

    async def messages(self) -> AsyncIterator[Message]:
        options = self.options
        rows = read_recipients(options.recipients, delimiter=options.delimiter)
        for number, item in enumerate(rows):
            if number % YIELD_EVERY == 0:
                # Rows that are skipped or bad never wait for the pool: let the progress
                # display and the Ctrl-C handler run now and then.
                await asyncio.sleep(0)
            if self.stop.is_set():
                return
            who = self.occurrences.next(item.email)
            if isinstance(item, BadRow):
                self._fail(item, who.occurrence, item.reason)
                continue
            first_row = item.row
            if self.first_rows is not None:
                first_row = self.first_rows.first(item.email, item.row)
            last = self.state.last(who)
            if last == DELIVERED or (last in (STARTED, UNKNOWN) and not options.resend_unknown):
                self.counts.skipped += 1
                continue
            if first_row != item.row:
                self._duplicate(item, who.occurrence, first_row)
                continue
            if self.suppressions is not None:
                try:
                    listed = await self.suppressions.suppressed([item.email])
                except (MailError, OSError) as exc:  # (a store gone: the rest waits for --resume)
                    self.counts.gave_up = f"the suppression list failed: {exc}"
                    self.stop.set()
                    return
                if listed:
                    self._suppressed(item, who.occurrence)
                    continue
            try:
                message = options.template.render(
                    sender=options.sender, to=item.address, variables=item.variables
                )
            except MessageError as exc:
                self._fail(item, who.occurrence, str(exc))
                continue
            self.pending[id(message)] = (message, item, who.occurrence)
            self.counts.in_flight += 1
            yield message

    def before_send(self, message: object) -> None:
        _, recipient, occurrence = self.pending[id(message)]
        assert self.journal is not None
        self.journal.started(recipient.row, recipient.email, occurrence)
        self.started.add(id(message))

    def on_result(self, result: SendResult[Any]) -> None:
        _, recipient, occurrence = self.pending.pop(id(result.message))
        self.started.discard(id(result.message))
        self.counts.in_flight -= 1
        self._finish(_result_row(recipient, occurrence, result))
        if self.suppressions is not None and result.refused:
            self.bounced += hard_bounces(result, source=f"batch {self.options.report.name}")
        if isinstance(result.error, _SERVER_ERRORS) and not result.accepted:
            self.server_failures += 1
            limit = max(GIVE_UP_AFTER, 2 * self.options.concurrency)
            if self.server_failures >= limit and not self.stop.is_set():
                self.counts.gave_up = f"{self.server_failures} sends in a row: {result.error}"
                self.stop.set()
        elif result.status is Status.DELIVERED:
            self.server_failures = 0

    async def add_bounces(self) -> None:
        """Add the hard bounces seen so far to the suppression list."""
        bounced, self.bounced = self.bounced, []
        if not bounced or self.suppressions is None:
            return
        try:
            self.counts.bounced += await self.suppressions.add(bounced)
        except (MailError, OSError) as exc:  # (the batch goes on; the report has them)
            logger.warning(
                "adding %d hard bounces to %s failed: %s", len(bounced), self.options.suppress, exc
            )

    def close(self) -> None:
        """Journal sends cut off by an abort as UNKNOWN, close, and rebuild the report."""
        if self.journal is None:
            return
        for key in list(self.started):
            _, recipient, occurrence = self.pending.pop(key)
            self._finish(
                ReportRow(
                    row=recipient.row,
                    email=recipient.email,
                    occurrence=occurrence,
                    status="unknown",
                    reply="the run was aborted while this message was being sent",
                )
            )
        self.journal.close()
        self.journal = None
        self.counts.report_counts = write_report(
            journal_path(self.options.report), self.options.report
        )


async def run_batch(options: BatchOptions, counts: Counts, stop: asyncio.Event) -> Counts:
    """Send the batch; return the counts. Setting ``stop`` ends it cleanly.

    After ``stop`` is set no new send starts; the ones in flight finish and are journaled.
    If the task is cancelled instead (a second Ctrl-C), sends still in flight are journaled
    UNKNOWN. Either way the report is written.

    Raises:
        BatchUsageError: The journal or options forbid starting (nothing was sent).
        ConfigError: The server URL is invalid.
    """
    async with contextlib.AsyncExitStack() as stack:
        suppressions = None
        if options.suppress is not None:
            try:
                suppressions = await stack.enter_async_context(open_suppressions(options.suppress))
            except (ConfigError, OutboxError) as exc:
                raise BatchUsageError(f"--suppress {options.suppress}: {exc}") from None
        return await _send(options, counts, stop, suppressions)


async def _send(
    options: BatchOptions,
    counts: Counts,
    stop: asyncio.Event,
    suppressions: Suppressions | None,
) -> Counts:
    counts.total = count_rows(options.recipients)
    run = _Run(options, counts, stop, suppressions)
    mailer = Mailer(
        options.url,
        max_connections=options.concurrency,
        rate_limit=options.rate,
        retry=RetryPolicy(attempts=options.attempts, base_delay=0.2),
        close_timeout=ABORT_GRACE,
        dkim=options.dkim or None,
    )
    run.open()
    try:
        async with mailer:
            results = mailer.send_many(
                run.messages(), concurrency=options.concurrency, before_send=run.before_send
            )
            try:
                async for result in results:
                    run.on_result(result)
                    if run.bounced:
                        await run.add_bounces()
            finally:
                # On cancellation, close the generator now so its cleanup (which stops the
                # pool's workers) runs at once, not whenever the garbage collector gets to it.
                aclose = getattr(results, "aclose", None)
                if aclose is not None:
                    await aclose()
    finally:
        run.close()
    return counts
