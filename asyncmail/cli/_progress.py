"""Progress while a batch runs (a Rich bar, or plain lines when not on a terminal) and the summary.

Both displays read the live ``Counts`` on a timer, so sending never waits for the screen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ._batch import Counts

__all__ = ["format_eta", "plain_line", "show_progress", "summary_table"]

REFRESH_SECONDS = 0.25


def format_eta(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``12s`` or ``?``."""
    if seconds is None:
        return "?"
    s = int(seconds + 0.5)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def plain_line(counts: Counts) -> str:
    """One progress line for logs and pipes."""
    suppressed = f"suppressed={counts.suppressed} " if counts.suppressed else ""
    if counts.duplicates:
        suppressed += f"duplicates={counts.duplicates} "
    return (
        f"progress: {counts.done}/{counts.total} delivered={counts.delivered} "
        f"failed={counts.failed} unknown={counts.unknown} skipped={counts.skipped} "
        f"{suppressed}"
        f"rate={counts.rate:.1f}/s eta={format_eta(counts.eta)}"
    )


def _fields(counts: Counts) -> dict[str, Any]:
    return {
        "sent": f"[green]{counts.delivered} sent",
        "failed": f"[red]{counts.failed} failed",
        "unknown": f"[yellow]{counts.unknown} unknown",
        "rate": f"{counts.rate:.0f}/s",
        "eta": f"ETA {format_eta(counts.eta)}",
    }


@contextlib.asynccontextmanager
async def _every(seconds: float, action: Callable[[], object]) -> AsyncIterator[None]:
    """Call ``action`` every ``seconds`` while the body runs (first after one period)."""

    async def repeat() -> None:
        while True:
            await asyncio.sleep(seconds)
            action()

    task = asyncio.create_task(repeat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def show_progress(
    counts: Counts, console: Console, *, interactive: bool, interval: float
) -> AsyncIterator[None]:
    """Display progress while the body runs: a live bar, or a plain line every ``interval`` s."""
    if not interactive:

        def print_line() -> None:
            console.print(plain_line(counts), highlight=False, soft_wrap=True)

        try:
            async with _every(interval, print_line):
                yield
        finally:
            print_line()
        return

    progress = Progress(
        TextColumn("[bold]sending"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[sent]}  {task.fields[failed]}  {task.fields[unknown]}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]}"),
        console=console,
        transient=False,
    )

    def refresh() -> None:
        total = max(counts.total, counts.done)
        progress.update(task_id, total=total, completed=counts.done, **_fields(counts))

    with progress:
        task_id = progress.add_task("batch", total=counts.total or None, **_fields(counts))
        try:
            async with _every(REFRESH_SECONDS, refresh):
                yield
        finally:
            refresh()


def summary_table(counts: Counts, elapsed: float, report: Path | None) -> Table:
    """The end-of-run table: this run's outcomes, the whole report's, time and rate."""
    table = Table(title="asyncmail batch" + (" (interrupted)" if counts.interrupted else ""))
    table.add_column("")
    table.add_column("this run", justify="right")
    if counts.report_counts:
        table.add_column("whole report", justify="right")
    whole = counts.report_counts
    rows = [
        ("delivered", counts.delivered, whole.get("delivered")),
        ("failed", counts.failed, whole.get("failed")),
        ("unknown", counts.unknown, whole.get("unknown")),
        ("skipped (already done)", counts.skipped, None),
    ]
    if counts.suppressed or whole.get("suppressed"):
        rows.append(("suppressed (not sent)", counts.suppressed, whole.get("suppressed")))
    if counts.duplicates or whole.get("duplicate"):
        rows.append(("duplicates (not sent)", counts.duplicates, whole.get("duplicate")))
    if counts.bounced:
        rows.append(("added to the suppression list", counts.bounced, None))
    for name, mine, all_ in rows:
        cells = [name, str(mine)]
        if whole:
            cells.append("" if all_ is None else str(all_))
        table.add_row(*cells)
    sent = counts.delivered + counts.failed + counts.unknown
    table.add_row("time", f"{elapsed:.2f} s", *([""] if whole else []))
    rate = sent / elapsed if elapsed > 0 else 0.0
    table.add_row("rate", f"{rate:.1f} msg/s", *([""] if whole else []))
    if report is not None:
        table.caption = f"report: {report}"
    return table
