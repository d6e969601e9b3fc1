"""``asyncmail batch``: the command's options, its checks before sending, and what it prints.

The run itself is in ``_batch`` (sending) and ``_enqueue`` (``--outbox``); ``--dry-run`` is
in ``_dryrun``; the resume command printed after Ctrl-C is made in ``_resume``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from .._config import Server
from .._exceptions import ConfigError, OutboxError
from ..batch._duplicates import find_duplicates
from ..batch._template import Template
from ..engine._ratelimit import RateLimit
from ._batch import BatchOptions, BatchUsageError
from ._common import EXIT_USAGE, console, quiet_outcomes, run, url_option, usage
from ._dkim import dkim_option, dkim_signers
from ._dryrun import PREVIEW_COUNT, DryRun, check_first_row, dry_run
from ._resume import resume_lines
from ._run import EXIT_NOT_ALL_DELIVERED, EXIT_OK, batch_with_progress, exit_code
from ._unsubscribe import list_options, with_list_headers

__all__ = ["batch"]

SHOWN_PROBLEMS = 10
_DELIMITERS = {"comma": ",", ",": ",", "semicolon": ";", ";": ";", "tab": "\t", "\\t": "\t"}
_DELIMITERS |= {"pipe": "|", "|": "|"}


def _delimiter(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return _DELIMITERS[value.lower()]
    except KeyError:
        raise usage(f"--delimiter {value!r}: use comma, semicolon, tab or pipe") from None


@click.command()
@click.argument("recipients", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--template",
    "-t",
    "template_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder with subject.txt and body.txt and/or body.html (Jinja2).",
)
@click.option("--from", "sender", required=True, help="The From address: 'Name <addr>' or addr.")
@url_option
@click.option(
    "--concurrency",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="SMTP connections at most, each sending one message after another.",
)
@click.option("--rate", help="Messages at most per time unit, such as 14/s or 1000/min.")
@click.option(
    "--attempts",
    default=3,
    show_default=True,
    type=click.IntRange(1, 20),
    help="Tries per message when the server says 'try later' (4xx) or the connection breaks.",
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The report CSV (default: RECIPIENTS-report.csv here); its journal sits next to it.",
)
@click.option(
    "--resume",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Continue the run of this report: delivered and maybe-delivered (unknown) "
    "recipients are skipped, failed ones are tried again.",
)
@click.option("--resend-unknown", is_flag=True, help="With --resume: send UNKNOWN ones again.")
@click.option(
    "--delimiter",
    metavar="comma|semicolon|tab|pipe",
    help="The CSV delimiter (default: read off the header line: , ; tab or |).",
)
@click.option(
    "--dedupe",
    is_flag=True,
    help="Send each address once (compared ignoring case): later rows of an address are "
    "not sent, and reported 'duplicate'. Without it they are sent, after a warning.",
)
@click.option(
    "--outbox",
    "outbox_url",
    help="Enqueue every message into this outbox (sqlite:////abs/path.db, redis://...) "
    "instead of sending it; 'asyncmail worker' sends them. Running it again enqueues "
    "nothing twice. --url, --concurrency, --rate and --attempts do not apply.",
)
@click.option(
    "--batch-id",
    help="With --outbox: the batch's name in the outbox keys (default: the one recorded "
    "next to the report, else one made from the report's path).",
)
@click.option(
    "--suppress",
    "suppress_list",
    metavar="FILE.csv|OUTBOX_URL",
    help="A suppression list (see 'asyncmail suppress'): rows whose address is on it are "
    "not sent (reported 'suppressed'), and recipients a server refuses as non-existent "
    "(5.1.x) are added to it. Give it again with --resume.",
)
@list_options
@dkim_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Render every row and send nothing; needs no server. Shows the first message, "
    "or saves the first ones with --preview.",
)
@click.option(
    "--preview",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --dry-run: write the first rendered messages into this folder as .eml files "
    "(named by row number and address).",
)
@click.option(
    "--preview-count",
    default=PREVIEW_COUNT,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="With --preview: how many messages to write.",
)
@click.option("--no-progress", is_flag=True, help="Plain progress lines instead of a bar.")
@click.option(
    "--progress-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Seconds between plain progress lines.",
)
@click.pass_context
def batch(
    ctx: click.Context,
    recipients: Path,
    template_dir: Path,
    sender: str,
    url: str | None,
    concurrency: int,
    rate: str | None,
    attempts: int,
    report: Path | None,
    resume: Path | None,
    resend_unknown: bool,
    delimiter: str | None,
    dedupe: bool,
    outbox_url: str | None,
    batch_id: str | None,
    suppress_list: str | None,
    unsubscribe_url: str | None,
    unsubscribe_secret_env: str | None,
    unsubscribe_mailto: str | None,
    list_id: str | None,
    dkim: tuple[str, ...],
    dry_run: bool,
    preview: Path | None,
    preview_count: int,
    no_progress: bool,
    progress_interval: float,
) -> None:
    """Send one personalised mail per row of RECIPIENTS (CSV with an 'email' column, or JSONL).

    Every send is journaled before it starts, so --resume after a crash or Ctrl-C never
    sends anyone a second copy; Ctrl-C prints the command that resumes. Recipients are
    known by address (and, for an address listed twice, by which of its rows), not by row
    number: rows may be added, removed or reordered before resuming. Exit code 1 when any
    recipient failed or is unknown.

    With --outbox, every message goes into an outbox instead, for 'asyncmail worker' to
    send, under a key per recipient: running it again enqueues nothing twice. Exit code 1
    when a row could not be enqueued.
    """
    quiet_outcomes()
    _check_combination(ctx.params)
    separator = _delimiter(delimiter)
    report = resume or report or Path(f"{recipients.stem}-report.csv")
    try:
        if outbox_url is None and not dry_run:
            Server.from_url(url) if url else Server.from_env()
        if rate is not None:
            RateLimit.parse(rate)
        template = with_list_headers(
            Template.from_dir(template_dir),
            unsubscribe_url=unsubscribe_url,
            unsubscribe_secret_env=unsubscribe_secret_env,
            unsubscribe_mailto=unsubscribe_mailto,
            list_id=list_id,
        )
        check_first_row(recipients, template, sender, separator)
        signers = dkim_signers(dkim)
        out = console()
        _warn_duplicates(recipients, separator, dedupe, outbox_url is not None, out)
    except (ConfigError, BatchUsageError) as exc:
        raise usage(str(exc)) from None
    if dry_run:
        plan = DryRun(
            recipients=recipients,
            template=template,
            sender=sender,
            delimiter=separator,
            dedupe=dedupe,
            preview=preview,
            preview_count=preview_count,
        )
        sys.exit(dry_run_exit(plan, out))
    options = BatchOptions(
        recipients=recipients,
        template=template,
        sender=sender,
        url=url,
        report=report,
        resume=resume is not None,
        resend_unknown=resend_unknown,
        concurrency=concurrency,
        rate=rate,
        attempts=attempts,
        suppress=suppress_list,
        dkim=signers,
        delimiter=separator,
        dedupe=dedupe,
    )
    if outbox_url is not None:
        sys.exit(_enqueue(options, outbox_url, batch_id, out))
    interactive = out.is_terminal and not no_progress
    counts = run(batch_with_progress(options, out, interactive, progress_interval))
    if counts.interrupted or counts.gave_up:
        for line in resume_lines(ctx, counts, report):
            out.print(line, soft_wrap=True, markup=False)
    sys.exit(exit_code(counts))


def _check_combination(given: dict[str, object]) -> None:
    """Refuse options that do not go together (a usage error, exit code 2)."""
    resume, report = given["resume"], given["report"]
    if resume is not None and report is not None and resume != report:
        raise usage("--resume names the report to continue; give --report only if it matches")
    if given["resend_unknown"] and resume is None:
        raise usage("--resend-unknown goes with --resume")
    if given["batch_id"] is not None and given["outbox_url"] is None:
        raise usage("--batch-id goes with --outbox")
    if given["preview"] is not None and not given["dry_run"]:
        raise usage("--preview goes with --dry-run")
    if given["dedupe"] and given["outbox_url"] is not None:
        raise usage("--dedupe does not apply with --outbox (every row is a recipient there)")


def dry_run_exit(plan: DryRun, out: Console) -> int:
    """``--dry-run``: 1 when a row does not render (see ``_dryrun.dry_run``)."""
    try:
        return dry_run(plan, out)
    except ConfigError as exc:
        raise usage(str(exc)) from None
    except OSError as exc:  # (the preview folder cannot be written)
        raise click.ClickException(f"--preview {plan.preview}: {exc.strerror or exc}") from None


def _warn_duplicates(
    recipients: Path, delimiter: str | None, dedupe: bool, outbox: bool, out: Console
) -> None:
    """Say how many rows repeat an address, and the first few, before anything is sent."""
    found = find_duplicates(recipients, delimiter=delimiter)
    if not found.count:
        return
    rows = "1 row repeats" if found.count == 1 else f"{found.count} rows repeat"
    examples = "; ".join(f"row {d.row} {d.email} (as row {d.first_row})" for d in found.examples)
    more = "; ..." if found.count > len(found.examples) else ""
    out.print(
        f"warning: {rows} an earlier row's address: {examples}{more}",
        soft_wrap=True,
        markup=False,
    )
    if dedupe:
        out.print("  they are not sent, and reported 'duplicate' (--dedupe)")
    elif not outbox:
        out.print("  each row gets its own copy; --dedupe sends each address once")


def _enqueue(options: BatchOptions, outbox_url: str, batch_id: str | None, out: Console) -> int:
    """``batch --outbox``: enqueue the rows not in the outbox yet, and say how many."""
    from ._enqueue import enqueue_batch

    try:
        counts = run(enqueue_batch(options, outbox_url, batch_id))
    except OutboxError as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_USAGE
    for problem in counts.problems[:SHOWN_PROBLEMS]:
        out.print(problem, soft_wrap=True, markup=False)
    skipped = f", {counts.skipped} sent by an earlier run" if counts.skipped else ""
    if counts.suppressed:
        skipped += f", {counts.suppressed} suppressed"
    problems = f", {len(counts.problems)} rows with problems" if counts.problems else ""
    out.print(
        f"enqueued {counts.enqueued} into {counts.outbox} (batch {counts.batch_id}): "
        f"{counts.existing} already there{skipped}{problems}",
        soft_wrap=True,
        markup=False,
    )
    return EXIT_NOT_ALL_DELIVERED if counts.problems else EXIT_OK
