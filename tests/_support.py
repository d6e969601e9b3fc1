"""Shared helpers for the transport tests: messages and Mailers pointed at a CaptureServer."""

from __future__ import annotations

from typing import Any

from asyncmail import Mailer, Message, RetryPolicy, Server, Timeouts, TLSMode
from asyncmail.testing import CaptureServer

#: Retries without waiting: tests assert behaviour, never time.
NO_WAIT_RETRY = RetryPolicy(attempts=3, base_delay=0.0, jitter=False)
#: Short phase timeouts so a stalled server is noticed quickly.
SHORT_TIMEOUTS = Timeouts(
    connect=5, greeting=0.5, command=0.5, data_start=0.5, data_transfer=2, final_reply=0.5
)


def message(i: int = 0, **overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "sender": "商店 <shop@example.com>",
        "to": [f"张三 <user{i}@example.net>"],
        "subject": f"订单确认 #{i}",
        "text": f"Hello {i}\n.\nA line with a lone dot above.",
        "html": f"<p>Hello {i}</p>",
    }
    fields.update(overrides)
    return Message(**fields)


def mailer_for(server: CaptureServer, **options: Any) -> Mailer:
    """A Mailer for the capture server, trusting its CA when it speaks TLS."""
    tls = {"none": TLSMode.NONE, "starttls": TLSMode.STARTTLS, "implicit": TLSMode.IMPLICIT}
    server_options = {
        key: options.pop(key)
        for key in (
            "username",
            "password",
            "oauth_token",
            "allow_plaintext_auth",
            "tls",
            "auth_mechanism",
            "local_hostname",
        )
        if key in options
    }
    server_options.setdefault("tls", tls[server.tls])
    if server.tls != "none":
        server_options["ssl_context"] = server.client_ssl_context()
    options.setdefault("retry", NO_WAIT_RETRY)
    return Mailer(Server(host=server.host, port=server.port, **server_options), **options)


def copies(server: CaptureServer, recipient: str) -> int:
    """How many stored messages were addressed to ``recipient``."""
    return sum(recipient in m.recipients for m in server.messages)
