"""What the preview answers at each path: the pages, the message HTML (sandboxed), the API."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, unquote

import anyio

from ._http import EventStream, Request, Response
from ._pages import message_page, static_file
from ._parse import attachment_content, details, inline_content, parse
from ._store import MessageStore, StoredMessage

__all__ = ["HTML_PART_POLICY", "PAGE_POLICY", "Routes"]

#: The preview's own pages: their scripts and styles, nothing from anywhere else.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)
#: A message's HTML: no scripts, no remote anything (images, fonts, styles), no forms, and a
#: sandbox even when opened outside its iframe. Its own images (``cid:``) come from here.
HTML_PART_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data: 'self'; font-src data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox"
)
#: Seconds between keep-alive comments on an idle event stream.
HEARTBEAT = 15.0
#: ``src="cid:..."``, ``url(cid:...)``: a reference to a part of the same message.
_CID = re.compile(r"""(["'(])cid:([^"')\s>]+)""", re.IGNORECASE)
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*")
_STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


def _json(value: object, status: int = 200) -> Response:
    body = json.dumps(value, ensure_ascii=False).encode()
    return Response(status, body, "application/json; charset=utf-8")


def _page(text: str) -> Response:
    return Response(
        200, text.encode(), "text/html; charset=utf-8", (("Content-Security-Policy", PAGE_POLICY),)
    )


def _download(content_type: str, content: bytes, *, disposition: str) -> Response:
    """A part of a message, as its own type (when well-formed) but never run as a page."""
    ctype = content_type if _MIME_TYPE.fullmatch(content_type) else "application/octet-stream"
    headers = (
        ("Content-Disposition", disposition),
        ("Content-Security-Policy", "default-src 'none'; sandbox"),
    )
    return Response(200, content, ctype, headers)


def listing(message: StoredMessage) -> dict[str, Any]:
    """A message as ``GET /api/messages`` lists it."""
    summary = message.summary
    return {
        "id": message.id,
        "from": summary.sender,
        "to": list(summary.to) or list(message.recipients),
        "subject": summary.subject,
        "date": summary.date,
        "received": message.received.isoformat(),
        "size": message.size,
        "attachments": len(summary.attachments),
    }


def detail(message: StoredMessage) -> dict[str, Any]:
    """A message as ``GET /api/messages/ID`` shows it."""
    parsed = details(parse(message.data))
    base = f"/api/messages/{message.id}"
    return {
        **listing(message),
        "cc": list(parsed.cc),
        "envelope": {"from": message.envelope_sender, "to": list(message.recipients)},
        "tls": message.tls,
        "authenticated_as": message.authenticated_as,
        "text": parsed.text,
        "html": parsed.html,
        "headers": [list(pair) for pair in parsed.headers],
        "attachments": [
            {
                "index": a.index,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "url": f"{base}/attachments/{a.index}",
            }
            for a in message.summary.attachments
        ],
        "raw_url": f"{base}/raw",
    }


class Routes:
    """The preview's request handler over a ``MessageStore``.

    Args:
        store: The messages to show.
        allowed_hosts: The ``Host`` header values accepted (DNS rebinding defence); None
            accepts any.
    """

    def __init__(self, store: MessageStore, *, allowed_hosts: frozenset[str] | None) -> None:
        self.store = store
        self.allowed_hosts = allowed_hosts

    async def __call__(self, request: Request) -> Response | EventStream:
        host = request.headers.get("host", "").lower()
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            return Response.error(HTTPStatus.MISDIRECTED_REQUEST)
        if request.method == "DELETE":
            if request.path == ("api", "messages"):
                count = len(self.store)
                self.store.clear()
                return _json({"deleted": count})
            return Response.error(HTTPStatus.METHOD_NOT_ALLOWED)
        return self._get(request.path)

    def _get(self, path: tuple[str, ...]) -> Response | EventStream:
        match path:
            case ():
                return _page(static_file("index.html").decode())
            case ("static", name) if name in _STATIC:
                return Response(200, static_file(name), _STATIC[name])
            case ("api", "messages"):
                return _json(
                    {
                        "total": len(self.store),
                        "messages": [listing(m) for m in self.store.newest_first()],
                    }
                )
            case ("api", "events"):
                return EventStream(self._events)
            case ("messages", number, *rest) | ("api", "messages", number, *rest):
                message = self.store.get(int(number)) if number.isdecimal() else None
                if message is None:
                    return Response.error(HTTPStatus.NOT_FOUND)
                return self._message(message, api=path[0] == "api", rest=tuple(rest))
        return Response.error(HTTPStatus.NOT_FOUND)

    def _message(self, message: StoredMessage, *, api: bool, rest: tuple[str, ...]) -> Response:
        match api, rest:
            case False, ():
                return _page(message_page(message))
            case False, ("html",):
                html = details(parse(message.data)).html
                if html is None:
                    return Response.error(HTTPStatus.NOT_FOUND)
                base = f"/api/messages/{message.id}/cid/"
                html = _CID.sub(lambda m: f"{m[1]}{base}{quote(unquote(m[2]), safe='@')}", html)
                policy = (("Content-Security-Policy", HTML_PART_POLICY),)
                return Response(200, html.encode(), "text/html; charset=utf-8", policy)
            case True, ():
                return _json(detail(message))
            case True, ("raw",):
                return Response(200, message.data)
            case True, ("cid", content_id):
                inline = inline_content(parse(message.data), content_id)
                if inline is None:
                    return Response.error(HTTPStatus.NOT_FOUND)
                return _download(inline[0], inline[1], disposition="inline")
            case True, ("attachments", index) if index.isdecimal():
                found = attachment_content(parse(message.data), int(index))
                if found is None:
                    return Response.error(HTTPStatus.NOT_FOUND)
                info, content = found
                name = f"attachment; filename*=UTF-8''{quote(info.filename)}"
                return _download(info.content_type, content, disposition=name)
        return Response.error(HTTPStatus.NOT_FOUND)

    async def _events(self) -> AsyncIterator[str]:
        """``retry`` then one ``messages`` event now and after every change; comments while idle."""
        seen = self.store.version
        yield f"retry: 2000\nevent: messages\ndata: {seen}\n\n"
        while True:
            with anyio.move_on_after(HEARTBEAT) as idle:
                seen = await self.store.wait_for_change(seen)
            yield ": idle\n\n" if idle.cancelled_caught else f"event: messages\ndata: {seen}\n\n"
