"""PreviewServer: the web preview of captured mail, an HTTP server over a MessageStore."""

from __future__ import annotations

import ipaddress
from types import TracebackType

from ._http import HTTPServer
from ._routes import Routes
from ._store import MessageStore

__all__ = ["HOST", "PreviewServer", "is_loopback"]

#: The interface the preview listens on unless told otherwise.
HOST = "127.0.0.1"
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PreviewServer:
    """Serves the web preview of ``store`` while entered (``async with``).

    On a loopback address only requests naming a loopback host (``Host: 127.0.0.1:PORT``,
    ``localhost:PORT``) are answered, so a web page cannot read the mail by DNS rebinding.

    Args:
        store: The messages to show; add to it as messages arrive.
        host: The interface to listen on.
        port: The port; 0 lets the OS pick a free one (see ``port`` and ``url``).
    """

    def __init__(self, store: MessageStore, *, host: str = HOST, port: int = 0) -> None:
        self.store = store
        self._routes = Routes(store, allowed_hosts=frozenset())
        self._http = HTTPServer(self._routes, host=host, port=port)

    def __repr__(self) -> str:
        return f"<PreviewServer {self.url if self.port else 'not started'} {self.store!r}>"

    @property
    def host(self) -> str:
        """The interface listened on."""
        return self._http.host

    @property
    def port(self) -> int:
        """The port listened on; 0 before start."""
        return self._http.port

    @property
    def url(self) -> str:
        """``http://HOST:PORT/``."""
        return self._http.url

    async def __aenter__(self) -> PreviewServer:
        await self._http.__aenter__()
        host = self._http.host
        if is_loopback(host):
            names = {*_LOOPBACK_NAMES, f"[{host}]" if ":" in host else host}
            self._routes.allowed_hosts = frozenset(f"{name}:{self.port}" for name in names)
        else:
            self._routes.allowed_hosts = None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)
