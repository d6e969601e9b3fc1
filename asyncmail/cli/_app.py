"""The click commands. Exit codes: 0 all delivered, 1 some not, 2 usage error, 130 Ctrl-C.

``send`` is in ``_send``, ``batch`` in ``_batch_command``, the outbox's commands (``worker``,
``outbox ...``) in ``_ops``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._batch_command import batch
from ._bounces import bounces
from ._common import console as _console
from ._common import run as _run
from ._ops import outbox, worker
from ._send import send
from ._suppress import suppress

if TYPE_CHECKING:
    from email.message import EmailMessage

    from ..testing import CapturedMessage

__all__ = ["cli"]


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
cli.add_command(send)
cli.add_command(batch)


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
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds each step (connect, greeting, each command) may take.",
)
def check(url: str, timeout: float) -> None:
    """Connect to URL and show EHLO extensions, TLS, certificate and AUTH; send nothing."""
    from ._check import run_check

    sys.exit(_run(run_check(url, connect_timeout=timeout, echo=click.echo)))


@cli.command()
@click.option(
    "--count",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="How many mails to send.",
)
@click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the mails land (default: a new temporary folder).",
)
@click.option(
    "--concurrency",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="SMTP connections at most.",
)
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
