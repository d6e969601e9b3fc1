"""The preview of ``asyncmail serve --web`` as the tests run it: real SMTP in, real HTTP out.

``running`` starts what the command starts (the Maildir capture server feeding a
``MessageStore``, and a ``PreviewServer``), both on port 0 and on the test's event loop;
``fetch`` is urllib in a worker thread, so the servers keep running while it waits.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import anyio

from asyncmail import Mailer, Message
from asyncmail.cli._serve import keep, maildir_server
from asyncmail.preview import MessageStore, PreviewServer
from asyncmail.testing import CapturedMessage, CaptureServer

SENDER = "Shop 商店 <shop@example.com>"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:  # noqa: ANN401 (whatever the API answered)
        return json.loads(self.body)


def request(url: str, method: str, headers: dict[str, str]) -> Reply:
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


async def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> Reply:
    """One HTTP request with urllib, in a worker thread (the servers run on this loop)."""
    return await anyio.to_thread.run_sync(request, url, method, headers or {})


@dataclass
class Running:
    smtp: CaptureServer
    web: PreviewServer
    maildir: Path

    @property
    def api(self) -> str:
        return f"{self.web.url}api/messages"


@asynccontextmanager
async def running(
    tmp_path: Path,
    *,
    auth: tuple[str, str] | None = None,
    tls: bool = False,
    max_messages: int = 1000,
) -> AsyncIterator[Running]:
    """What ``asyncmail serve --web 127.0.0.1:0`` runs: SMTP into a Maildir and the preview."""
    store = MessageStore(max_messages=max_messages)

    def stored(message: CapturedMessage, headers: EmailMessage) -> None:
        keep(store, message)

    maildir = tmp_path / "md"
    smtp = maildir_server(maildir, on_stored=stored, auth=auth, tls=tls)
    async with smtp, PreviewServer(store) as web:
        yield Running(smtp, web, maildir)


async def send(url: str, *messages: Message) -> None:
    async with Mailer(url) as mailer:
        for message in messages:
            await mailer.send(message)
