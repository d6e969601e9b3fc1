"""The server and Mailer options of the Django backend, read from Django's settings.

``ASYNCMAIL_URL`` (a setting, else the environment variable) wins; without it the server is
built from Django's own ``EMAIL_*`` settings, the password going into the ``Server`` value
and never into a URL. A backend's constructor arguments (``get_connection(host=...,
username=..., password=...)``, as ``send_mail(auth_user=, auth_password=)`` passes them)
override either.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import cast

from django.conf import settings

from .._config import Server, Timeouts, TLSMode
from .._exceptions import ConfigError
from ..sync._mailer import MailerOptions

__all__ = ["Overrides", "frozen", "server_and_options"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Overrides:
    """A backend's constructor arguments, as Django's SMTP backend takes them; None: unset."""

    host: str | None = None
    port: int | None = None
    username: str | None = None
    password: str | None = None
    use_tls: bool | None = None
    use_ssl: bool | None = None
    timeout: float | None = None


def server_and_options(given: Overrides) -> tuple[str | Server, MailerOptions]:
    """The server (the URL itself when nothing overrides it) and the Mailer's keyword
    arguments.

    Raises:
        ConfigError: The settings are invalid (the message names the setting).
    """
    url = getattr(settings, "ASYNCMAIL_URL", None) or os.environ.get("ASYNCMAIL_URL")
    timeout = settings.EMAIL_TIMEOUT if given.timeout is None else given.timeout
    server: str | Server
    if url:
        changes = _url_overrides(given)
        # (as given, the URL is the Mailer's to read: any URL it takes works here too)
        server = Server.from_url(str(url), **changes) if changes else str(url)
    else:
        server = _from_email_settings(given)
    options = _options()
    if timeout is not None and "timeouts" not in options:
        options["timeouts"] = _timeouts(timeout)
    return server, options


def _url_overrides(given: Overrides) -> dict[str, object]:
    """What the backend's arguments change in a server read from ``ASYNCMAIL_URL``."""
    changes: dict[str, object] = {}
    if given.host is not None:
        changes["host"] = given.host
    if given.port is not None:
        changes["port"] = given.port
    if given.username is not None:
        changes["username"] = given.username or None
    if given.password is not None:
        changes["password"] = given.password or None
    tls = _tls_mode(given.use_tls, given.use_ssl)
    if tls is not None:
        changes["tls"] = tls
    return changes


def _from_email_settings(given: Overrides) -> Server:
    """A Server from Django's ``EMAIL_*`` settings, as its SMTP backend reads them."""
    for name in ("EMAIL_SSL_CERTFILE", "EMAIL_SSL_KEYFILE"):
        if getattr(settings, name, None):
            raise ConfigError(
                f"{name}: client certificates are not supported by asyncmail's backend"
            )
    use_tls = settings.EMAIL_USE_TLS if given.use_tls is None else given.use_tls
    use_ssl = settings.EMAIL_USE_SSL if given.use_ssl is None else given.use_ssl
    username = settings.EMAIL_HOST_USER if given.username is None else given.username
    password = settings.EMAIL_HOST_PASSWORD if given.password is None else given.password
    port = given.port or settings.EMAIL_PORT
    try:
        return Server(
            host=str(given.host or settings.EMAIL_HOST),
            port=int(port) if port else None,
            # neither: plaintext, as Django's SMTP backend does (no STARTTLS)
            tls=_tls_mode(use_tls, use_ssl) or TLSMode.NONE,
            username=str(username) if username else None,
            password=str(password) if password and username else None,
        )
    except ConfigError as exc:
        raise ConfigError(f"Django's EMAIL_* settings: {exc}") from None


def _tls_mode(use_tls: bool | None, use_ssl: bool | None) -> TLSMode | None:
    if use_tls and use_ssl:
        raise ConfigError(
            "EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive: set only one of them to True"
        )
    if use_ssl:
        return TLSMode.IMPLICIT
    if use_tls:
        return TLSMode.STARTTLS
    return None


def _options() -> MailerOptions:
    """``ASYNCMAIL_OPTIONS``, checked against the Mailer's keyword arguments."""
    options = getattr(settings, "ASYNCMAIL_OPTIONS", None) or {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"ASYNCMAIL_OPTIONS must be a dict, not {type(options).__name__}")
    unknown = sorted(str(k) for k in options if k not in MailerOptions.__annotations__)
    if unknown:
        raise ConfigError(f"ASYNCMAIL_OPTIONS: unknown Mailer option(s): {', '.join(unknown)}")
    return cast(MailerOptions, dict(options))


def _timeouts(seconds: float) -> Timeouts:
    """``EMAIL_TIMEOUT``: Django's socket timeout, for every SMTP phase."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise ConfigError(f"EMAIL_TIMEOUT must be a number, not {seconds!r}") from None
    return Timeouts(
        connect=value,
        greeting=value,
        command=value,
        data_start=value,
        data_transfer=value,
        final_reply=value,
    )


def frozen(value: object) -> Hashable:
    """A hashable stand-in for an option value (lists and dicts become tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(frozen(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))  # (kept alive by the settings that hold it)
    return value
