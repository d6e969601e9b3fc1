"""An optional tap on the SMTP conversation (``asyncmail send -v``), secrets left out.

Whoever wants a transcript sets ``TAP`` (a context variable) around the sends; connections
opened in that context report each line: ``("C", "EHLO ...")`` for the client,
``("S", "250 ...")`` for the server. What is never reported: the arguments of AUTH and every
line the client sends while AUTH is going on (``AUTH PLAIN ****``), and the message content
(only its size). With ``TAP`` unset (always, except under ``send -v``) nothing is done.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Protocol

import aiosmtplib

__all__ = ["TAP", "Tap", "client_lines", "redacted_command", "tap_client"]

HIDDEN = "****"


class Tap(Protocol):
    """Told each line of the conversation: who said it ("C" or "S"), and the line."""

    def __call__(self, who: str, line: str) -> None: ...


TAP: ContextVar[Tap | None] = ContextVar("asyncmail_smtp_tap", default=None)


def content_line(size: int) -> str:
    """What the transcript shows instead of message content."""
    return f"[{size} bytes of message content]"


def redacted_command(args: tuple[bytes, ...], in_auth: bool) -> str:
    """A command as the transcript shows it: AUTH's arguments and answers hidden."""
    if in_auth:
        return HIDDEN
    words = [a.decode("utf-8", "replace") for a in args]
    if words and words[0].upper() == "AUTH" and len(words) > 2:
        return f"{words[0]} {words[1]} {HIDDEN}"
    return " ".join(words)


def client_lines(data: bytes | memoryview) -> Iterator[str]:
    """The command lines in a write; BDAT chunks (and what follows) as a byte count."""
    raw = bytes(data)
    while raw:
        line, newline, rest = raw.partition(b"\n")
        if not newline:  # no line end: a piece of content
            yield content_line(len(raw))
            return
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        yield text
        words = text.split()
        if len(words) >= 2 and words[0].upper() == "BDAT" and words[1].isdigit():
            size = int(words[1])
            if size:
                yield content_line(min(size, len(rest)))
            rest = rest[size:]
        raw = rest


def tap_client(client: aiosmtplib.SMTP) -> None:
    """Report the greeting, commands and replies of an aiosmtplib client, if ``TAP`` is set.

    aiosmtplib reads the greeting in ``connect``, says STARTTLS in ``starttls`` and sends
    every other command through ``execute_command``: those three are wrapped, on this
    client only.
    """
    tap = TAP.get()
    if tap is None:
        return
    connect, execute, starttls = client.connect, client.execute_command, client.starttls
    in_auth = False

    async def tapped_connect(**kwargs: Any) -> aiosmtplib.SMTPResponse:  # noqa: ANN401
        greeting = await connect(**kwargs)
        for line in server_lines(greeting.code, greeting.message):
            tap("S", line)
        return greeting

    async def tapped_execute(
        *args: bytes,
        **kwargs: Any,  # noqa: ANN401
    ) -> aiosmtplib.SMTPResponse:
        nonlocal in_auth
        starts_auth = bool(args) and args[0].upper() == b"AUTH"
        tap("C", redacted_command(args, in_auth and not starts_auth))
        response = await execute(*args, **kwargs)
        for line in server_lines(response.code, response.message):
            tap("S", line)
        in_auth = (starts_auth or in_auth) and response.code == 334
        return response

    async def tapped_starttls(**kwargs: Any) -> aiosmtplib.SMTPResponse:  # noqa: ANN401
        tap("C", "STARTTLS")
        response = await starttls(**kwargs)
        for line in server_lines(response.code, response.message):
            tap("S", line)
        return response

    client.starttls = tapped_starttls  # type: ignore[method-assign]
    client.connect = tapped_connect  # type: ignore[method-assign]
    client.execute_command = tapped_execute  # type: ignore[method-assign]


def server_lines(code: int, text: str) -> list[str]:
    """A reply as the server's lines: ``250-first``, ..., ``250 last``."""
    lines = text.splitlines() or [""]
    last = len(lines) - 1
    return [f"{code}{' ' if i == last else '-'}{line}" for i, line in enumerate(lines)]
