"""A minimal HTTP/1.1 server for the preview: one request per connection, no request bodies.

Enough for a browser on the same machine and nothing more: GET, HEAD and DELETE; the request
head is bounded (``MAX_HEAD`` bytes) and must arrive within ``READ_TIMEOUT`` seconds; every
response closes the connection. A handler returns a ``Response``, or an ``EventStream`` for
Server-Sent Events, which stays open until the client leaves or the server stops.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from urllib.parse import unquote, urlsplit

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

__all__ = ["EventStream", "HTTPServer", "Request", "Response"]

#: The most bytes a request line and headers may take.
MAX_HEAD = 16 * 1024
#: Seconds a client has to send its request head.
READ_TIMEOUT = 10.0
#: Seconds a response may take to be written.
WRITE_TIMEOUT = 30.0
#: What every response says, whatever it carries.
BASE_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
METHODS = frozenset({"GET", "HEAD", "DELETE"})

logger = logging.getLogger("asyncmail.preview")


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request: the method, the decoded path split into segments, the headers."""

    method: str
    path: tuple[str, ...]
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Response:
    """A complete response."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def error(cls, status: HTTPStatus) -> Response:
        """A short plain-text error page."""
        return cls(status, f"{status.value} {status.phrase}\n".encode())


@dataclass(frozen=True, slots=True)
class EventStream:
    """A Server-Sent Events response: each text ``events`` yields is sent as it comes."""

    events: Callable[[], AsyncIterator[str]]
    headers: tuple[tuple[str, str], ...] = field(default=())


Handler = Callable[[Request], Awaitable[Response | EventStream]]


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    phrase = HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {phrase}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_request(head: bytes) -> Request | HTTPStatus:
    """The request in a head (without its final empty line), or the status refusing it."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        return HTTPStatus.BAD_REQUEST
    if not version.startswith("HTTP/1."):
        return HTTPStatus.HTTP_VERSION_NOT_SUPPORTED
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return HTTPStatus.BAD_REQUEST
        headers[name.lower()] = value.strip()
    if method not in METHODS:
        return HTTPStatus.METHOD_NOT_ALLOWED
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        return HTTPStatus.REQUEST_ENTITY_TOO_LARGE  # no request here carries a body
    path = urlsplit(target).path
    if not path.startswith("/"):
        return HTTPStatus.BAD_REQUEST
    return Request(method, tuple(unquote(s) for s in path.split("/")[1:] if s), headers)


class HTTPServer:
    """Serves ``handler`` on ``host:port`` while entered (``async with``); port 0 picks one.

    Args:
        handler: Turns a request into a response.
        host: The interface to listen on.
        port: The port; 0 lets the OS pick a free one (see ``port``).
    """

    def __init__(self, handler: Handler, *, host: str, port: int) -> None:
        self._handler = handler
        self.host = host
        self._requested_port = port
        self.port = 0
        self._stack = contextlib.AsyncExitStack()

    @property
    def url(self) -> str:
        """``http://HOST:PORT/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def __aenter__(self) -> HTTPServer:
        listener = await anyio.create_tcp_listener(
            local_host=self.host, local_port=self._requested_port
        )
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(listener)
            group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(group.cancel_scope.cancel)  # runs first: stop serving
            group.start_soon(listener.serve, self._connection)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        gone = (anyio.BrokenResourceError, anyio.ClosedResourceError, TimeoutError, OSError)
        async with stream:
            try:
                reply = await self._respond(stream)
                if isinstance(reply, Response):
                    with anyio.fail_after(WRITE_TIMEOUT):
                        await stream.send(reply.body)
                elif reply is not None:
                    async for event in reply.events():
                        with anyio.fail_after(WRITE_TIMEOUT):
                            await stream.send(event.encode())
            except gone:  # the client left or stalled: nothing more to say to it
                pass
            except Exception:  # a bug here must not stop the server
                logger.exception("the preview failed to answer a request")

    async def _respond(self, stream: anyio.abc.SocketStream) -> Response | EventStream | None:
        """Read the request, send the response head; what remains to send comes back."""
        buffered = BufferedByteReceiveStream(stream)
        try:
            with anyio.fail_after(READ_TIMEOUT):
                head = await buffered.receive_until(b"\r\n\r\n", MAX_HEAD)
        except TimeoutError:
            return None
        except anyio.DelimiterNotFound:
            request: Request | HTTPStatus = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
        except (anyio.IncompleteRead, anyio.EndOfStream):
            return None
        else:  # the delimiter may come in the same read as more than MAX_HEAD bytes
            too_large = len(head) > MAX_HEAD
            request = (
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE if too_large else parse_request(head)
            )
        reply = (
            Response.error(request)
            if isinstance(request, HTTPStatus)
            else await self._handler(request)
        )
        headers = [*BASE_HEADERS, ("Connection", "close")]
        if isinstance(reply, EventStream):
            headers += [("Content-Type", "text/event-stream; charset=utf-8"), *reply.headers]
            await stream.send(_head(200, headers))
            return reply
        headers += [("Content-Type", reply.content_type), *reply.headers]
        headers.append(("Content-Length", str(len(reply.body))))
        await stream.send(_head(reply.status, headers))
        if isinstance(request, Request) and request.method == "HEAD":
            return None
        return reply
