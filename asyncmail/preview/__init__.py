"""The web preview of ``asyncmail serve --web``: captured mail in a browser and a JSON API.

A ``MessageStore`` keeps the newest messages in memory; a ``PreviewServer`` shows them over
HTTP (a small server of its own on anyio streams, no web framework)::

    store = MessageStore(max_messages=1000)
    async with PreviewServer(store, port=8025) as preview:
        store.add(raw_bytes, envelope_sender="a@example.com", recipients=("b@example.com",))
"""

from ._server import PreviewServer as PreviewServer
from ._store import MessageStore as MessageStore
from ._store import StoredMessage as StoredMessage

__all__ = ["MessageStore", "PreviewServer", "StoredMessage"]
