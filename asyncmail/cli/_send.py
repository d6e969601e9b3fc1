"""``asyncmail send``: one message built from flags.

Bodies: ``--text TEXT`` and ``--html HTML`` are the body itself; a value that starts with
``@`` names a file instead (``@-`` is stdin), as curl does; ``--text-file`` and
``--html-file`` say the same explicitly. A bare ``--text`` value that names an existing file
is refused with a pointer to ``--text-file``: earlier versions read ``--text`` as a file, and
sending the path as the body would be a silent surprise.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import IO

import click

from .._config import Server
from .._exceptions import ConfigError, DeliveryError, MessageError
from ..message._message import Attachment, Message
from ._common import console, quiet_outcomes, run, url_option, usage
from ._failure import failure_lines
from ._run import EXIT_NOT_ALL_DELIVERED, EXIT_OK

__all__ = ["send"]


def _body(flag: str, inline: str | None, file: IO[str] | None) -> str | None:
    """The body from ``--FLAG`` (inline or ``@file``) or ``--FLAG-file``."""
    if inline is not None and file is not None:
        raise usage(f"give --{flag} or --{flag}-file, not both")
    if file is not None:
        return file.read()
    if inline is None:
        return None
    if inline.startswith("@"):
        path = inline[1:]
        try:
            if path == "-":
                return sys.stdin.read()
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise usage(f"--{flag} {inline}: cannot read the file: {exc}") from None
    if "\n" not in inline and os.path.isfile(inline):
        raise usage(
            f"--{flag} takes the {flag} itself, and {inline!r} is a file: "
            f"use --{flag}-file {inline} (or --{flag} @{inline}) to send its contents"
        )
    return inline


def _headers(given: tuple[str, ...]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for item in given:
        name, colon, value = item.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not name:
            raise usage(f"--header {item!r}: write it as 'Name: value'")
        if any(c in item for c in "\r\n\x00"):
            raise usage(
                f"--header {name!r}: CR, LF and NUL are not allowed in a header "
                "(they would start another header)"
            )
        headers.append((name, value))
    return headers


@click.command()
@click.option("--from", "sender", required=True, help="The From address: 'Name <addr>' or addr.")
@click.option("--to", "to", multiple=True, help="A To recipient; repeat for more.")
@click.option("--cc", multiple=True, help="A Cc recipient; repeat for more.")
@click.option("--bcc", multiple=True, help="A Bcc recipient; repeat for more.")
@click.option("--reply-to", "reply_to", multiple=True, help="A Reply-To address; repeat for more.")
@click.option("--subject", default="", help="The subject line.")
@click.option(
    "--text",
    metavar="TEXT|@FILE",
    help="The plain-text body itself; @FILE reads it from a file (@- from stdin).",
)
@click.option(
    "--text-file",
    type=click.File("r", encoding="utf-8"),
    help="Read the plain-text body from this file ('-' for stdin).",
)
@click.option(
    "--html",
    metavar="HTML|@FILE",
    help="The HTML body itself; @FILE reads it from a file (@- from stdin).",
)
@click.option(
    "--html-file",
    type=click.File("r", encoding="utf-8"),
    help="Read the HTML body from this file ('-' for stdin).",
)
@click.option(
    "--header",
    "header",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="An extra header, such as 'X-Campaign: spring'; repeat for more.",
)
@click.option(
    "--attach",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file to attach; repeat for more.",
)
@url_option
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Print the SMTP conversation to stderr (AUTH and the message body are not shown).",
)
def send(
    sender: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    reply_to: tuple[str, ...],
    subject: str,
    text: str | None,
    text_file: IO[str] | None,
    html: str | None,
    html_file: IO[str] | None,
    header: tuple[str, ...],
    attach: tuple[Path, ...],
    url: str | None,
    verbose: bool,
) -> None:
    """Send one message built from flags.

    --text and --html take the body itself; a value starting with @ names a file
    (--text @body.txt, @- for stdin), as do --text-file and --html-file.
    Exit code 0 when delivered to every recipient, 1 when not, 2 for a usage error.
    """
    quiet_outcomes()
    if not (to or cc or bcc):
        raise usage("give at least one of --to, --cc, --bcc")
    text_body = _body("text", text, text_file)
    html_body = _body("html", html, html_file)
    if text_body is None and html_body is None:
        raise usage("give --text, --html or both (or --text-file, --html-file)")
    try:
        server = Server.from_url(url) if url else Server.from_env()
        message = Message(
            sender=sender,
            to=list(to),
            cc=list(cc),
            bcc=list(bcc),
            reply_to=list(reply_to),
            subject=subject,
            text=text_body,
            html=html_body,
            headers=_headers(header),
            attachments=[Attachment.from_path(path) for path in attach],
        )
    except (MessageError, ConfigError) as exc:
        raise usage(str(exc)) from None
    sys.exit(run(_deliver(server, message, verbose)))


async def _deliver(server: Server, message: Message, verbose: bool) -> int:
    from ..engine._mailer import Mailer
    from ._transcript import transcript

    with transcript(console(stderr=True)) if verbose else contextlib.nullcontext():
        async with Mailer(server) as mailer:
            try:
                result = await mailer.send(message)
            except DeliveryError as exc:
                for line in failure_lines(exc, server):
                    click.echo(line, err=True)
                return EXIT_NOT_ALL_DELIVERED
    reply = f" ({result.reply})" if result.reply else ""
    click.echo(f"delivered {result.message_id} to {', '.join(result.accepted)}{reply}")
    for rcpt, error in result.refused.items():
        click.echo(f"refused {rcpt}: {error}", err=True)
    return EXIT_NOT_ALL_DELIVERED if result.refused else EXIT_OK
