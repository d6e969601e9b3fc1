"""What the ``outbox`` commands print: an outbox's state as text, a rich table, or JSON."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from rich.table import Table
from rich.text import Text

from ..outbox._model import OutboxState, OutboxStatistics, OutboxStatus

__all__ = [
    "DURATION_UNITS",
    "entries_table",
    "error_text",
    "parse_duration",
    "state_text",
    "statistics_json",
    "statistics_lines",
    "status_json",
    "status_lines",
]

DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
#: How long a message's error may be in the table.
TABLE_ERROR_CHARS = 200
JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"`` or ``"2w"``.

    Raises:
        ValueError: Not a duration.
    """
    m = _DURATION.fullmatch(text.strip().lower())
    if m is None:
        raise ValueError(f"{text!r} is not a duration: use a number and s, m, h, d or w (7d)")
    return float(m.group(1)) * DURATION_UNITS[m.group(2) or "s"]


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def error_text(status: OutboxStatus) -> str:
    """Why a message is not (yet) delivered: the servers' refusals, else the error."""
    refusals = list(dict.fromkeys(str(refusal) for refusal in status.refused.values()))
    if refusals and status.state is not OutboxState.DELIVERED:
        return "; ".join(refusals)
    return status.error or ""


def state_text(status: OutboxStatus) -> str:
    """The state, and "(suppressed)" for a message never sent: its recipients are suppressed."""
    if status.state is OutboxState.FAILED and status.suppressed and not status.attempts:
        return "failed (suppressed)"
    return status.state.value


def statistics_lines(url: str, stats: OutboxStatistics) -> list[str]:
    """``outbox status``: counts by state, the oldest waiting message, the rate."""
    width = max(len(state.value) for state in OutboxState)
    lines = [f"outbox {url}"]
    lines += [f"  {s.value:<{width}}  {stats.counts.get(s, 0)}" for s in OutboxState]
    if stats.oldest_queued_age is None:
        lines.append("oldest queued: none waiting")
    else:
        lines.append(f"oldest queued: waiting for {_age(stats.oldest_queued_age)}")
    lines.append(f"rate: {stats.rate:.2f} messages/s over the last minute")
    return lines


def statistics_json(url: str, stats: OutboxStatistics) -> dict[str, JsonValue]:
    return {
        "outbox": url,
        "counts": {s.value: stats.counts.get(s, 0) for s in OutboxState},
        "oldest_queued_age": stats.oldest_queued_age,
        "rate": stats.rate,
    }


def status_lines(status: OutboxStatus) -> list[str]:
    """``outbox status --key``: one message, with each recipient's refusal."""
    lines = [
        f"key:          {status.key}",
        f"state:        {state_text(status)}",
        f"priority:     {status.priority}",
        f"attempts:     {status.attempts}",
        f"message-id:   {status.message_id}",
        f"enqueued:     {_when(status.enqueued_at)}",
        f"updated:      {_when(status.updated_at)}",
        f"next attempt: {_when(status.next_attempt_at)}",
    ]
    if status.error:
        lines.append(f"error:        {status.error}")
    if status.reply:
        lines.append(f"reply:        {status.reply}")
    lines += [f"accepted:     {rcpt}" for rcpt in status.accepted]
    lines += [
        f"refused:      {rcpt}: {refusal}"
        for rcpt, refusal in status.refused.items()
        if not refusal.suppressed
    ]
    lines += [f"suppressed:   {rcpt}" for rcpt in status.suppressed]
    lines += [f"pending:      {rcpt}" for rcpt in status.pending]
    lines += [f"unknown:      {rcpt}" for rcpt in status.unknown]
    return lines


def status_json(status: OutboxStatus) -> dict[str, JsonValue]:
    def iso(moment: datetime | None) -> str | None:
        return None if moment is None else moment.isoformat()

    return {
        "key": status.key,
        "state": status.state.value,
        "priority": status.priority,
        "attempts": status.attempts,
        "message_id": status.message_id,
        "enqueued_at": iso(status.enqueued_at),
        "updated_at": iso(status.updated_at),
        "next_attempt_at": iso(status.next_attempt_at),
        "accepted": list(status.accepted),
        "refused": {
            rcpt: {"code": r.code, "text": r.text, "retryable": r.retryable}
            for rcpt, r in status.refused.items()
        },
        "pending": list(status.pending),
        "unknown": list(status.unknown),
        "suppressed": list(status.suppressed),
        "error": status.error,
        "reply": status.reply,
    }


def entries_table(entries: Iterable[OutboxStatus]) -> Table:
    """``outbox list``: key, state, attempts, last change, and why not delivered."""
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("key", overflow="fold")
    table.add_column("state")
    table.add_column("attempts", justify="right")
    table.add_column("updated", no_wrap=True)
    table.add_column("error", overflow="fold")
    for status in entries:
        error = error_text(status)
        if len(error) > TABLE_ERROR_CHARS:
            error = error[: TABLE_ERROR_CHARS - 1] + "…"
        table.add_row(  # (Text: a key or a server's words are never read as markup)
            Text(status.key),
            state_text(status),
            str(status.attempts),
            _when(status.updated_at),
            Text(error),
        )
    return table
