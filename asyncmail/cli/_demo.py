"""``asyncmail demo``: a real batch against an embedded capture server, no account needed.

It starts the capture server on 127.0.0.1 (a free port), sends one personalised mail per row of
the bundled recipient list through the pool, with the progress bar and the journal, and says
where the mails landed (a Maildir) and how fast it went.
"""

from __future__ import annotations

import csv
import itertools
import tempfile
import time
from pathlib import Path

from rich.console import Console

from ..batch._template import Template
from ._batch import BatchOptions
from ._run import batch_with_progress, exit_code
from ._serve import maildir_server

__all__ = ["DEMO_DATA", "run_demo"]

DEMO_DATA = Path(__file__).resolve().parent.parent / "_demo_data"
SENDER = "asyncmail demo <demo@example.com>"


def _recipients(count: int, folder: Path) -> Path:
    """The bundled list cut (or repeated, with fresh addresses) to ``count`` rows."""
    source = DEMO_DATA / "recipients.csv"
    target = folder / "recipients.csv"
    with source.open(encoding="utf-8", newline="") as f:
        header, *rows = list(csv.reader(f))
    with target.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(header)
        for i, row in enumerate(itertools.islice(itertools.cycle(rows), count), start=1):
            out.writerow([f"user{i:07d}@example.com", *row[1:]])
    return target


async def run_demo(
    *,
    count: int,
    maildir: Path | None,
    concurrency: int,
    console: Console,
    interactive: bool,
) -> int:
    """Run the demo; return the exit code of the batch."""

    work = Path(tempfile.mkdtemp(prefix="asyncmail-demo-"))
    maildir = maildir or work / "maildir"
    template = Template.from_dir(DEMO_DATA / "template")
    recipients = _recipients(count, work)
    async with maildir_server(maildir) as server:
        console.print(f"capture server listening on {server.url}")
        options = BatchOptions(
            recipients=recipients,
            template=template,
            sender=SENDER,
            url=server.url,
            report=work / "report.csv",
            concurrency=concurrency,
        )
        started = time.monotonic()
        counts = await batch_with_progress(options, console, interactive, interval=1.0)
        elapsed = time.monotonic() - started
        received = server.statistics().messages
    rate = counts.delivered / elapsed if elapsed > 0 else 0.0
    console.print(
        f"sent {counts.delivered} personalised mails in {elapsed:.2f} s ({rate:.0f} mails/s); "
        f"the server received {received}",
        soft_wrap=True,
    )
    console.print(f"they landed in the Maildir {maildir} (try: mutt -f {maildir})", soft_wrap=True)
    console.print(f"report: {options.report}", soft_wrap=True)
    return exit_code(counts)
