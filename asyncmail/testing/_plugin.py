"""The pytest plugin registered under the ``pytest11`` entry point.

Fixtures:

- ``mail_server``: a ``CaptureServer`` running in a thread (so it serves sync tests and async
  tests on any event loop), plaintext unless configured, one per test.
- ``mail_outbox``: the live list of messages ``mail_server`` captured.

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

from ._records import CapturedMessage
from ._server import CaptureServer

__all__ = ["mail_outbox", "mail_server"]

MARKER = "mail_server"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**kwargs): keyword arguments for the CaptureServer of the mail_server fixture",
    )


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
def mail_outbox(mail_server: CaptureServer) -> list[CapturedMessage]:
    """The messages ``mail_server`` captured: a live list, like Django's ``mail.outbox``."""
    return mail_server.messages
