"""The pytest plugin registered under the ``pytest11`` entry point.

Fixtures:

- ``mail_server``: a ``CaptureServer`` running in a thread (so it serves sync tests and async
  tests on any event loop), plaintext unless configured, one per test.
- ``mail_outbox``: the live list of messages ``mail_server`` captured, a ``MailOutbox``.
- ``memory_outbox``: ``asyncmail.testing.outbox``, where ``Mailer("memory://")`` puts its
  messages. It is emptied before every test, whether the test asks for it or not.

Configure the server with the ``mail_server`` marker, whose keyword arguments go to
``CaptureServer``::

    @pytest.mark.mail_server(tls="starttls", auth={"u": "p"}, faults=[Fault.disconnect("dot")])
    def test_something(mail_server, mail_outbox): ...

This module imports no optional dependency, so pytest starts even without the ``testing`` extra;
the fixtures then fail with the install hint.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..engine._mail_outbox import MEMORY_OUTBOX, MailOutbox
from ..message._parsed import SentMessage
from ._records import CapturedMessage
from ._server import CaptureServer

__all__ = ["mail_outbox", "mail_server", "memory_outbox"]

MARKER = "mail_server"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**kwargs): keyword arguments for the CaptureServer of the mail_server fixture",
    )


@pytest.fixture(autouse=True)
def _asyncmail_clear_memory_outbox() -> None:
    """Every test starts with an empty ``asyncmail.testing.outbox``."""
    MEMORY_OUTBOX.clear()


@pytest.fixture
def memory_outbox() -> MailOutbox[SentMessage]:
    """What ``Mailer("memory://")`` sent during this test: ``asyncmail.testing.outbox``."""
    return MEMORY_OUTBOX


@pytest.fixture
def mail_server(request: pytest.FixtureRequest) -> Iterator[CaptureServer]:
    """A started capture server in its own thread, configured by the ``mail_server`` marker."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is not None and marker.args:
        raise pytest.UsageError(f"@pytest.mark.{MARKER} takes keyword arguments only")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    with CaptureServer(**kwargs).run_in_thread() as server:
        yield server


@pytest.fixture
def mail_outbox(mail_server: CaptureServer) -> MailOutbox[CapturedMessage]:
    """The messages ``mail_server`` captured: a live ``MailOutbox``, like Django's
    ``mail.outbox``."""
    return mail_server.messages
