"""Running a batch from a terminal: the progress display, Ctrl-C, and the exit code.

Shared by ``asyncmail batch`` and ``asyncmail demo``.
"""

from __future__ import annotations

import asyncio
import signal
import time

from rich.console import Console

from ._batch import BatchOptions, Counts, run_batch
from ._progress import show_progress, summary_table

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_NOT_ALL_DELIVERED",
    "EXIT_OK",
    "batch_with_progress",
    "exit_code",
]

EXIT_OK, EXIT_NOT_ALL_DELIVERED, EXIT_INTERRUPTED = 0, 1, 130  # 2 (usage) is click's


def exit_code(counts: Counts) -> int:
    """130 when interrupted, 1 when the report holds a failed or unknown row, else 0."""
    if counts.interrupted:
        return EXIT_INTERRUPTED
    whole = counts.report_counts
    return EXIT_NOT_ALL_DELIVERED if whole.get("failed") or whole.get("unknown") else EXIT_OK


async def batch_with_progress(
    options: BatchOptions,
    console: Console,
    interactive: bool,
    interval: float,
) -> Counts:
    """Run a batch with progress and a summary; the first Ctrl-C stops it cleanly."""
    counts, stop = Counts(), asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    presses = 0

    def interrupt() -> None:
        nonlocal presses
        presses += 1
        counts.interrupted = True
        if presses == 1:
            stop.set()
            console.print(
                f"stopping: no new sends; waiting for the {counts.in_flight} handed to the pool "
                "(Ctrl-C again to abort them)"
            )
        elif task is not None:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    started = time.monotonic()
    try:
        async with show_progress(counts, console, interactive=interactive, interval=interval):
            await run_batch(options, counts, stop)
    except asyncio.CancelledError:
        if task is None or task.uncancel() > 0:
            raise
        counts.interrupted = True
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    console.print(summary_table(counts, time.monotonic() - started, options.report))
    if counts.gave_up:
        console.print(
            f"gave up: the server could not be used ({counts.gave_up}); recipients not tried "
            f"are left for --resume {options.report}",
            soft_wrap=True,
        )
    return counts
