"""Helpers for the relay tests: an in-process relay in front of a capture server."""

from __future__ import annotations

import contextlib
import smtplib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

from asyncmail import DKIM, Mailer, Outbox, RetryPolicy
from asyncmail.relay._config import RelayConfig
from asyncmail.relay._relay import Relay
from asyncmail.testing import CaptureServer

RELAY_HOST = "relay.test"
#: Retries come quickly: the tests are about outcomes, not patience.
QUICK_RETRY = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.1, jitter=False)


@contextlib.asynccontextmanager
async def relaying(
    tmp_path: Path,
    upstream: CaptureServer,
    config: RelayConfig | None = None,
    dkim: DKIM | None = None,
) -> AsyncIterator[Relay]:
    """A relay on 127.0.0.1 (any port) that queues in SQLite and delivers to ``upstream``."""
    config = replace(config or RelayConfig(), host="127.0.0.1", port=0, hostname=RELAY_HOST)
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    outbox = Outbox(url, resend_unknown=True, retry=QUICK_RETRY, dkim=dkim)
    async with (
        Mailer(upstream.url) as mailer,
        outbox,
        outbox.deliver(mailer, concurrency=2, grace=1),
        Relay(config, outbox) as relay,
    ):
        yield relay


def smtp_client(relay: Relay) -> smtplib.SMTP:
    """A connected smtplib client (Python's own, not asyncmail's) of ``relay``."""
    return smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test")
