"""The click commands. Exit codes: 0 all delivered, 1 some not, 2 usage error, 130 Ctrl-C.

The outbox's commands (``worker``, ``outbox ...``) are in ``_ops``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from .._config import Server
from .._exceptions import ConfigError, DeliveryError, MessageError, OutboxError
from ..batch._recipients import BadRow, read_recipients
from ..batch._template import Template
from ..engine._ratelimit import RateLimit
from ._batch import BatchOptions, BatchUsageError, check_first_row
from ._bounces import bounces
from ._dkim import dkim_option, dkim_signers
from ._ops import outbox, worker
from ._relay import relay
from ._run import (
    EXIT_INTERRUPTED,
    EXIT_NOT_ALL_DELIVERED,
    EXIT_OK,
    batch_with_progress,
    exit_code,
)
from ._suppress import suppress
from ._unsubscribe import list_options, with_list_headers

if TYPE_CHECKING:
    from email.message import EmailMessage

    from ..testing import CapturedMessage

__all__ = ["cli"]

DRY_RUN_SHOWN_PROBLEMS = 10
EXIT_USAGE = 2
T = TypeVar("T")

url_option = click.option(
    "--url",
    envvar="ASYNCMAIL_URL",
    show_envvar=True,
    help="The SMTP server, such as smtps://user:pass@smtp.example.com (never echoed back).",
)


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False)


def _usage(message: str) -> click.UsageError:
    return click.UsageError(message)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; Ctrl-C exits 130, configuration errors exit 2."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except (ConfigError, BatchUsageError) as exc:
        raise _usage(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="asyncmail", prog_name="asyncmail")
def cli() -> None:
    """Send email from the command line: one message, a personalised batch, or a demo.

    Start with `asyncmail demo`: no account and no setup needed.
    """


cli.add_command(worker)
cli.add_command(outbox)
cli.add_command(bounces)
cli.add_command(suppress)
cli.add_command(relay)


# --- send -------------------------------------------------------------------------------


@cli.command()
@click.option("--from", "sender", required=True, help="The From address: 'Name <addr>' or addr.")
@click.option("--to", "to", multiple=True, help="A To recipient; repeat for more.")
@click.option("--cc", multiple=True, help="A Cc recipient; repeat for more.")
@click.option("--bcc", multiple=True, help="A Bcc recipient; repeat for more.")
@click.option("--subject", default="", help="The subject line.")
@click.option("--text", "text_file", type=click.File("r", encoding="utf-8"), help="Text body file.")
@click.option("--html", "html_file", type=click.File("r", encoding="utf-8"), help="HTML body file.")
@click.option(
    "--attach",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file to attach; repeat for more.",
)
@url_option
def send(
    sender: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    subject: str,
    text_file: IO[str] | None,
    html_file: IO[str] | None,
    attach: tuple[Path, ...],
    url: str | None,
) -> None:
    """Send one message built from flags. Use '-' as FILE to read a body from stdin."""
    from ..engine._mailer import Mailer
    from ..message._message import Attachment, Message

    if not (to or cc or bcc):
        raise _usage("give at least one of --to, --cc, --bcc")
    if text_file is None and html_file is None:
        raise _usage("give --text FILE, --html FILE or both")
    try:
        message = Message(
            sender=sender,
            to=list(to),
            cc=list(cc),
            bcc=list(bcc),
            subject=subject,
            text=text_file.read() if text_file else None,
            html=html_file.read() if html_file else None,
            attachments=[Attachment.from_path(path) for path in attach],
        )
    except MessageError as exc:
        raise _usage(str(exc)) from None

    async def go() -> int:
        async with Mailer(url) as mailer:
            try:
                result = await mailer.send(message)
            except DeliveryError as exc:
                click.echo(f"not delivered: {exc}", err=True)
                return EXIT_NOT_ALL_DELIVERED
        reply = f" ({result.reply})" if result.reply else ""
        click.echo(f"delivered {result.message_id} to {', '.join(result.accepted)}{reply}")
        for rcpt, error in result.refused.items():
            click.echo(f"refused {rcpt}: {error}", err=True)
        return EXIT_NOT_ALL_DELIVERED if result.refused else EXIT_OK

    sys.exit(_run(go()))


# --- batch ------------------------------------------------------------------------------


@cli.command()
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
@click.option("--dry-run", is_flag=True, help="Render every row, send nothing.")
@click.option("--no-progress", is_flag=True, help="Plain progress lines instead of a bar.")
@click.option(
    "--progress-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Seconds between plain progress lines.",
)
def batch(
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
    outbox_url: str | None,
    batch_id: str | None,
    suppress_list: str | None,
    unsubscribe_url: str | None,
    unsubscribe_secret_env: str | None,
    unsubscribe_mailto: str | None,
    list_id: str | None,
    dkim: tuple[str, ...],
    dry_run: bool,
    no_progress: bool,
    progress_interval: float,
) -> None:
    """Send one personalised mail per row of RECIPIENTS (CSV with an 'email' column, or JSONL).

    Every send is journaled before it starts, so --resume after a crash or Ctrl-C never
    sends anyone a second copy. Recipients are known by address (and, for an address listed
    twice, by which of its rows), not by row number: rows may be added, removed or reordered
    before resuming. Exit code 1 when any recipient failed or is unknown.

    With --outbox, every message goes into an outbox instead, for 'asyncmail worker' to
    send, under a key per recipient: running it again enqueues nothing twice. Exit code 1
    when a row could not be enqueued.
    """
    if resume is not None and report is not None and resume != report:
        raise _usage("--resume names the report to continue; give --report only if it matches")
    if resend_unknown and resume is None:
        raise _usage("--resend-unknown goes with --resume")
    if batch_id is not None and outbox_url is None:
        raise _usage("--batch-id goes with --outbox")
    report = resume or report or Path(f"{recipients.stem}-report.csv")
    try:
        if outbox_url is None:
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
        first = check_first_row(recipients, template, sender)
        signers = dkim_signers(dkim)
    except (ConfigError, BatchUsageError) as exc:
        raise _usage(str(exc)) from None
    console = _console()
    if dry_run:
        sys.exit(_dry_run(recipients, template, sender, console, first))
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
    )
    if outbox_url is not None:
        sys.exit(_enqueue(options, outbox_url, batch_id, console))
    interactive = console.is_terminal and not no_progress
    counts = _run(batch_with_progress(options, console, interactive, progress_interval))
    sys.exit(exit_code(counts))


def _enqueue(options: BatchOptions, outbox_url: str, batch_id: str | None, console: Console) -> int:
    """``batch --outbox``: enqueue the rows not in the outbox yet, and say how many."""
    from ._enqueue import enqueue_batch

    try:
        counts = _run(enqueue_batch(options, outbox_url, batch_id))
    except OutboxError as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_USAGE
    for problem in counts.problems[:DRY_RUN_SHOWN_PROBLEMS]:
        console.print(problem, soft_wrap=True, markup=False)
    skipped = f", {counts.skipped} sent by an earlier run" if counts.skipped else ""
    if counts.suppressed:
        skipped += f", {counts.suppressed} suppressed"
    problems = f", {len(counts.problems)} rows with problems" if counts.problems else ""
    console.print(
        f"enqueued {counts.enqueued} into {counts.outbox} (batch {counts.batch_id}): "
        f"{counts.existing} already there{skipped}{problems}",
        soft_wrap=True,
        markup=False,
    )
    return EXIT_NOT_ALL_DELIVERED if counts.problems else EXIT_OK


def _dry_run(
    recipients: Path, template: Template, sender: str, console: Console, first: int
) -> int:
    good, problems = 0, 0
    for item in read_recipients(recipients):
        reason = item.reason if isinstance(item, BadRow) else None
        if reason is None and not isinstance(item, BadRow):
            try:
                address = item.address
                template.render(sender=sender, to=address, variables=item.variables)
            except MessageError as exc:
                reason = str(exc)
        if reason is None:
            good += 1
            continue
        problems += 1
        if problems <= DRY_RUN_SHOWN_PROBLEMS:
            console.print(f"row {item.row} ({item.email or '-'}): {reason}", soft_wrap=True)
    if first:
        console.print(f"dry run: row {first} renders; nothing was sent")
    console.print(f"dry run: {good} rows would be sent, {problems} rows have problems")
    return EXIT_NOT_ALL_DELIVERED if problems else EXIT_OK


# --- serve, check, demo -----------------------------------------------------------------


@cli.command()
@click.option("--port", default=1025, show_default=True, type=click.IntRange(0, 65535))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--maildir",
    default="maildir",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where received messages are stored (created if missing).",
)
def serve(port: int, host: str, maildir: Path) -> None:
    """Run a local capture SMTP server that stores every message in a Maildir.

    For development: point your app at smtp://127.0.0.1:1025 and read what it sends.
    """
    from ._serve import cannot_listen, maildir_server

    def show(message: CapturedMessage, headers: EmailMessage) -> None:
        sender, to = message.envelope_sender, ",".join(message.recipients)
        click.echo(f"received from={sender} to={to} subject={headers.get('Subject', '')!r}")

    server = maildir_server(maildir, port=port, host=host, on_stored=show)

    async def go() -> None:
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(server)
            except OSError as exc:  # the port is taken, the host is not an address here...
                raise click.ClickException(cannot_listen(host, port, exc)) from None
            click.echo(f"listening on {server.url}, storing in {maildir}/ (Ctrl-C to stop)")
            await asyncio.Event().wait()

    _run(go())


@cli.command()
@click.argument("url", envvar="ASYNCMAIL_URL")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1))
def check(url: str, timeout: float) -> None:
    """Connect to URL and show EHLO extensions, TLS, certificate and AUTH; send nothing."""
    from ._check import run_check

    sys.exit(_run(run_check(url, connect_timeout=timeout, echo=click.echo)))


@cli.command()
@click.option("--count", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the mails land (default: a new temporary folder).",
)
@click.option("--concurrency", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--no-progress", is_flag=True, help="Plain progress lines instead of a bar.")
def demo(count: int, maildir: Path | None, concurrency: int, no_progress: bool) -> None:
    """Send 1,000 personalised mails to a local capture server: no account, no setup."""
    from ._demo import run_demo

    console = _console()
    interactive = console.is_terminal and not no_progress
    sys.exit(
        _run(
            run_demo(
                count=count,
                maildir=maildir,
                concurrency=concurrency,
                console=console,
                interactive=interactive,
            )
        )
    )
