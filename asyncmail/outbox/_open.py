"""Which store an outbox URL names."""

from __future__ import annotations

from .._exceptions import ConfigError
from ._store import Store, redact_url

__all__ = ["open_store"]


def open_store(url: str) -> Store:
    """The store a URL names (not yet opened).

    ``sqlite:////abs/path.db`` or ``sqlite:///relative.db``; ``redis://[:password@]host:port/db?queue=NAME``
    (``rediss://`` for TLS).

    Raises:
        ConfigError: Not an outbox URL.
    """
    if not isinstance(url, str):
        raise ConfigError(f"an outbox URL must be a string, not {type(url).__name__}")
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        from ._sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if scheme in ("redis", "rediss"):
        from ._redis import RedisStore

        return RedisStore.from_url(url)
    raise ConfigError(
        f"unsupported outbox URL {redact_url(url)!r}: use sqlite:////path/to/outbox.db "
        "or redis://host:6379/0?queue=mail"
    )
