"""``asyncmail batch --outbox``: every rendered row goes into an outbox instead of to a server.

Each row is enqueued under a key made of the batch and the row's recipient, who is known the
way the journal knows them: by address and occurrence (which row of that address it is),
never by row number (see ``batch._journal``)::

    batch:<batch id>:<address>:<occurrence>

Enqueueing is idempotent by key, so running the same batch again, or with ``--resume`` after
a crash or Ctrl-C, enqueues nothing twice: a row already in the outbox is counted and left
alone. What becomes of each message is the outbox's to record (``asyncmail outbox status``),
so no journal is written. Two files keep this mode and the direct one apart:

- a journal of the report (a run that sent directly) is honoured with ``--resume``: the rows
  it has delivered, or maybe delivered, are not enqueued; without ``--resume`` it stops the
  run, as it stops a direct one;
- ``REPORT.outbox`` records the batch id, and stops a direct run of the same report (it would
  send what the outbox sends).

The batch id is ``--batch-id``, else the one ``REPORT.outbox`` recorded, else a digest of
the report's absolute path (so the same command, run again, makes the same keys).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._exceptions import ConfigError, MessageError
from ..batch._journal import (
    DELIVERED,
    STARTED,
    UNKNOWN,
    Identity,
    JournalState,
    Occurrences,
    address_id,
    journal_path,
)
from ..batch._recipients import BadRow, Recipient, read_recipients
from ..outbox._outbox import Outbox
from ..suppression._model import Suppressions
from ._batch import YIELD_EVERY, BatchOptions, BatchUsageError, outbox_marker
from ._suppress import open_suppressions

__all__ = ["EnqueueCounts", "batch_key", "enqueue_batch"]

#: Enqueues in flight at once: SQLite commits concurrent ones together (one fsync).
WORKERS = 16
_BATCH_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(slots=True)
class EnqueueCounts:
    """What ``enqueue_batch`` did with the rows."""

    batch_id: str = ""
    outbox: str = ""
    enqueued: int = 0
    existing: int = 0
    skipped: int = 0
    suppressed: int = 0
    """Rows not enqueued: their address is on the suppression list (``--suppress``)."""
    problems: list[str] = field(default_factory=list)

    def problem(self, row: int, email: str, reason: str) -> None:
        self.problems.append(f"row {row} ({email or '-'}): {reason}")


def batch_key(batch_id: str, email: str, occurrence: int) -> str:
    """The outbox key of the ``occurrence``-th row for ``email`` in the batch."""
    return f"batch:{batch_id}:{address_id(email)}:{occurrence}"


def _batch_id(report: Path, given: str | None) -> str:
    marker = outbox_marker(report)
    recorded = None
    if marker.exists():
        try:
            recorded = json.loads(marker.read_text(encoding="utf-8"))["batch_id"]
        except (ValueError, KeyError, TypeError):
            raise BatchUsageError(f"{marker} is not an asyncmail batch marker") from None
    batch_id = given or recorded
    if batch_id is None:
        digest = hashlib.sha256(str(report.resolve()).encode("utf-8", "surrogatepass"))
        batch_id = digest.hexdigest()[:12]
    if not isinstance(batch_id, str) or not _BATCH_ID.fullmatch(batch_id):
        raise BatchUsageError(
            f"invalid batch id {batch_id!r}: use up to 64 letters, digits, '.', '_' or '-'"
        )
    return batch_id


def _journal_state(options: BatchOptions) -> JournalState | None:
    """What a direct run of this report sent, when resuming it; None if there was none."""
    jpath = journal_path(options.report)
    if not jpath.exists() or jpath.stat().st_size == 0:
        return None
    if not options.resume:
        raise BatchUsageError(
            f"{jpath} exists: this batch was sent without --outbox. Continue it with "
            f"--resume {options.report} (recipients it reached are not enqueued), or delete "
            f"{jpath} to start over (they would get a second copy)."
        )
    try:
        return JournalState.replay(jpath)
    except ConfigError as exc:
        raise BatchUsageError(str(exc)) from None


def _already_sent(state: JournalState | None, options: BatchOptions, who: Identity) -> bool:
    """The journal of a direct run has this recipient delivered, or maybe delivered."""
    if state is None:
        return False
    last = state.last(who)
    return last == DELIVERED or (last in (STARTED, UNKNOWN) and not options.resend_unknown)


async def _enqueue(
    outbox: Outbox,
    options: BatchOptions,
    counts: EnqueueCounts,
    rows: MemoryObjectReceiveStream[tuple[Recipient, str]],
) -> None:
    async with rows:
        async for item, key in rows:
            if await outbox.status(key) is not None:
                counts.existing += 1
                continue
            address = item.address
            try:
                message = options.template.render(
                    sender=options.sender, to=address, variables=item.variables
                )
                status = await outbox.enqueue(message, key=key)
            except (MessageError, ConfigError) as exc:
                counts.problem(item.row, item.email, str(exc))
                continue
            if status.suppressed and not status.pending:
                counts.suppressed += 1  # (stored FAILED, never sent: the key is taken)
            else:
                counts.enqueued += 1


async def _feed(
    options: BatchOptions,
    state: JournalState | None,
    counts: EnqueueCounts,
    send: MemoryObjectSendStream[tuple[Recipient, str]],
) -> None:
    """Number the rows by address, and send on those to enqueue with their keys."""
    async with send:
        occurrences = Occurrences()
        rows = read_recipients(options.recipients, delimiter=options.delimiter)
        for number, item in enumerate(rows):
            if number % YIELD_EVERY == 0:
                await checkpoint()  # (rows skipped or bad never wait: let the others run)
            who = occurrences.next(item.email)
            if isinstance(item, BadRow):
                counts.problem(item.row, item.email, item.reason)
            elif _already_sent(state, options, who):
                counts.skipped += 1
            else:
                await send.send((item, batch_key(counts.batch_id, item.email, who.occurrence)))


async def enqueue_batch(
    options: BatchOptions, outbox_url: str, batch_id: str | None
) -> EnqueueCounts:
    """Enqueue every row of the batch that is not in the outbox yet.

    Raises:
        BatchUsageError: A journal or marker forbids it, or the batch id is invalid.
        ConfigError: Not an outbox URL.
        OutboxError: The outbox cannot be used.
    """
    state = _journal_state(options)
    counts = EnqueueCounts(batch_id=_batch_id(options.report, batch_id))
    async with contextlib.AsyncExitStack() as stack:
        suppression: Suppressions | bool | None = None
        if options.suppress is not None:
            if options.suppress == outbox_url:
                suppression = True
            else:
                suppression = await stack.enter_async_context(open_suppressions(options.suppress))
        outbox = await stack.enter_async_context(
            Outbox(outbox_url, suppression=suppression, dkim=options.dkim or None)
        )
        counts.outbox = outbox.store.url
        marker = {"batch_id": counts.batch_id, "outbox": outbox.store.url}
        outbox_marker(options.report).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        send, receive = anyio.create_memory_object_stream[tuple[Recipient, str]](WORKERS)
        async with anyio.create_task_group() as tg:
            for _ in range(WORKERS):
                tg.start_soon(_enqueue, outbox, options, counts, receive.clone())
            receive.close()
            await _feed(options, state, counts, send)
    return counts
