"""``EmailBackend``: Django's ``send_mail`` and friends, sent through a warm asyncmail pool.

All backend instances of a process with the same configuration share one ``SyncMailer``, so
its connections stay open from request to request (Django makes a backend per call). A
Django message goes out as the bytes Django's SMTP backend would send (``message.message()``,
as a ``RawMessage``), to the envelope it would use (``from_email``, ``recipients()``): Bcc
recipients are in the envelope only, never in the headers.
"""

from __future__ import annotations

import email.message
import email.utils
import threading
from collections.abc import Hashable, Sequence
from typing import Any

from django.core.mail.backends.base import BaseEmailBackend

from .._config import Server
from .._exceptions import DeliveryError, MessageError, SendResult, Status
from ..message._raw import RawMessage
from ..sync._mailer import MailerOptions, SyncMailer
from ._settings import Overrides, frozen, server_and_options

__all__ = ["EmailBackend", "close_mailers"]


_lock = threading.Lock()
#: The process's SyncMailers, one per configuration.
_mailers: dict[Hashable, SyncMailer] = {}


def _shared(server: str | Server, options: MailerOptions) -> SyncMailer:
    """The SyncMailer for this configuration, made on first use and kept."""
    key: Hashable = (server, frozen(dict(options)))  # (a Server is a frozen dataclass)
    with _lock:
        mailer = _mailers.get(key)
        if mailer is None:
            mailer = _mailers[key] = SyncMailer(server, **options)
        return mailer


def close_mailers() -> None:
    """Close the backend's shared SyncMailers (their connections QUIT).

    They close by themselves when the process exits; call this where they should close
    earlier (a Celery ``worker_process_shutdown`` signal, a test's teardown).
    The next message opens a new one.
    """
    with _lock:
        mailers = list(_mailers.values())
        _mailers.clear()
    for mailer in mailers:
        mailer.close()


class EmailBackend(BaseEmailBackend):  # type: ignore[misc]  # (Django has no type hints)
    """A Django email backend that sends through asyncmail's connection pool.

    ``EMAIL_BACKEND = "asyncmail.django.EmailBackend"``; see ``asyncmail.django`` for the
    settings. ``close()`` (and leaving ``with get_connection()``) keeps the shared pool
    open for the next request.

    Args:
        fail_silently: Do not raise delivery failures (``DeliveryError``); the engine
            logs each at WARNING (logger ``asyncmail.outcomes``). Bad messages and bad
            settings raise all the same.
        host, port, username, password, use_tls, use_ssl, timeout: Override the
            settings, as for Django's SMTP backend.
    """

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        use_ssl: bool | None = None,
        timeout: float | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(fail_silently=fail_silently, **kwargs)
        self._given = Overrides(
            host=host,
            port=port,
            username=username,
            password=password,
            use_tls=use_tls,
            use_ssl=use_ssl,
            timeout=timeout,
        )
        self._mailer: SyncMailer | None = None

    def open(self) -> bool:
        """Take the shared SyncMailer (it starts on its first send); True when this backend
        had none.

        Raises:
            ConfigError: The settings are invalid.
        """
        if self._mailer is not None:
            return False
        server, options = server_and_options(self._given)
        self._mailer = _shared(server, options)
        return True

    def close(self) -> None:
        """Let go of the shared SyncMailer; it stays open, warm, for the next backend."""
        self._mailer = None

    def send_messages(self, email_messages: Sequence[Any]) -> int:
        """Send Django ``EmailMessage`` objects; return how many were delivered.

        They go one after the other, as with Django's SMTP backend; requests in other
        threads send at the same time over the shared pool. A message without recipients
        is skipped, as Django's SMTP backend does, and one not delivered does not stop
        the next one.

        Raises:
            DeliveryError: A message was not delivered (the first such error, raised
                after the others were sent), unless ``fail_silently``. Its ``result``
                says more.
            MessageError: A message is invalid (raised before any is sent).
            ConfigError: The settings are invalid.
        """
        if not email_messages:
            return 0
        batch = [_raw(m) for m in email_messages if m.recipients()]
        if not batch:
            return 0
        owned = self._mailer is None
        self.open()
        mailer = self._mailer
        assert mailer is not None
        try:
            results = _send(mailer, batch)
        finally:
            if owned:
                self.close()
        failed = [r for r in results if r.status is not Status.DELIVERED]
        if failed and not self.fail_silently:
            error = failed[0].error
            assert isinstance(error, DeliveryError)
            raise error
        # (with fail_silently, each failure is still logged at WARNING by the engine)
        return len(results) - len(failed)

    def __repr__(self) -> str:
        mailer = "none" if self._mailer is None else repr(self._mailer)
        return f"<EmailBackend fail_silently={self.fail_silently} mailer={mailer}>"


def _raw(message: Any) -> RawMessage:  # noqa: ANN401 (a Django EmailMessage: no type hints)
    """A Django message as Django renders it, to its sender and recipients.

    The bytes are those Django's SMTP backend would send (``message.message()``), and so
    is the envelope (``from_email``, ``recipients()``): Bcc is never in the bytes.

    Raises:
        MessageError: An address cannot be read, or the bytes cannot go unchanged.
    """
    rendered = message.message()
    # (Message's own as_bytes: Django's SafeMIMEText overrides it without a policy argument)
    data = email.message.Message.as_bytes(rendered, policy=rendered.policy.clone(linesep="\r\n"))
    return RawMessage(
        data,
        sender=_addr_spec(message.from_email, "from_email"),
        recipients=[_addr_spec(r, "recipients") for r in message.recipients()],
    )


def _addr_spec(value: object, field: str) -> str:
    """The bare address of ``"Name <addr>"`` or ``addr`` (validated by RawMessage)."""
    text = str(value)
    addr = email.utils.parseaddr(text)[1]
    if not addr:
        raise MessageError(f"{field}: cannot read an address in {text!r}")
    return addr


def _send(mailer: SyncMailer, batch: list[RawMessage]) -> list[SendResult[RawMessage]]:
    """One result per message, delivered or not."""
    results: list[SendResult[RawMessage]] = []
    for message in batch:
        try:
            results.append(mailer.send(message))
        except DeliveryError as exc:
            if exc.result is None:  # (never: Mailer.send binds every error's result)
                raise
            results.append(exc.result)
    return results
