"""The click commands. Exit codes: 0 all delivered, 1 some not, 2 usage error, 130 Ctrl-C.

``send`` is in ``_send``, ``batch`` in ``_batch_command``, the outbox's commands (``worker``,
``outbox ...``) in ``_ops``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._batch_command import batch
from ._bounces import bounces
from ._common import console as _console
from ._common import run as _run
from ._ops import outbox, worker
from ._relay import relay
from ._send import send
from ._suppress import suppress

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
cli.add_command(relay)


# --- serve, check, demo -----------------------------------------------------------------


def _web_address(_ctx: click.Context, _param: click.Parameter, value: str | None) -> object:
    from ._serve import parse_web_address

    try:
        return None if value is None else parse_web_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _user_password(_ctx: click.Context, _param: click.Parameter, value: str | None) -> object:
    if value is None:
        return None
    user, colon, password = value.partition(":")
    if not colon or not user or not password:
        raise click.BadParameter("expected USER:PASSWORD")  # never echo the value
    return user, password


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
@click.option(
    "--web",
    metavar="HOST:PORT",
    callback=_web_address,
    help="Also show the mail in a browser, and a JSON API, at http://HOST:PORT/ "
    "(such as 127.0.0.1:8025; PORT alone means 127.0.0.1).",
)
@click.option(
    "--max-messages",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="With --web: how many messages the preview keeps in memory (the oldest go first).",
)
@click.option(
    "--auth",
    metavar="USER:PASSWORD",
    callback=_user_password,
    help="Require SMTP AUTH with this user and password (never echoed back).",
)
@click.option(
    "--tls",
    is_flag=True,
    help="Offer STARTTLS with a throwaway certificate; the CA file to verify it is printed.",
)
def serve(
    port: int,
    host: str,
    maildir: Path,
    web: tuple[str, int] | None,
    max_messages: int,
    auth: tuple[str, str] | None,
    tls: bool,
) -> None:
    """Run a local capture SMTP server that stores every message in a Maildir.

    For development: point your app at smtp://127.0.0.1:1025 and read what it sends, in
    the Maildir or, with --web 127.0.0.1:8025, in a browser.
    """
    from ._serve import run_serve

    _run(
        run_serve(
            maildir=maildir,
            host=host,
            port=port,
            web=web,
            auth=auth,
            tls=tls,
            max_messages=max_messages,
        )
    )


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
