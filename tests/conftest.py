"""Suite-wide options and guards.

- ``--uvloop`` runs the async tests on uvloop instead of asyncio's loop.
- ``redis_server`` / ``redis_url`` (tests/_redis.py): a real redis-server for the outbox tests,
  skipped where it is not installed (a failure in CI).
- ``send_path`` (tests/_support.py): each way the content goes (pipelined DATA, plain DATA,
  BDAT), for the fault matrix.
- Any record at ERROR or above from the ``asyncmail`` logger (or a child) fails the test: the
  library logs at ERROR only when something went wrong inside it. A test whose subject is that
  log says so with ``@pytest.mark.allow_error_logs``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from ._redis import redis_server as redis_server
from ._redis import redis_url as redis_url
from ._support import send_path as send_path

#: The logger whose ERROR records fail a test (with its children).
GUARDED_LOGGER = "asyncmail"


def pytest_configure(config: pytest.Config) -> None:
    # pyproject's addopts block asyncmail's own pytest11 entry point (-p no:asyncmail): loaded
    # that early it imports the whole package before pytest-cov starts measuring. Register it
    # here instead; a run with the entry point left on already has it.
    if not config.pluginmanager.has_plugin("asyncmail"):
        config.pluginmanager.import_plugin("asyncmail.testing._plugin")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--uvloop", action="store_true", help="run the async tests on uvloop (asyncmail[speed])"
    )


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Any] | None:
    if not config.getoption("--uvloop"):
        return {"asyncio": asyncio.new_event_loop}
    import uvloop

    return {"uvloop": uvloop.new_event_loop}


class _ErrorRecords(logging.Handler):
    """Keeps the records at ERROR and above that reach it, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def check(self) -> None:
        """Fail (once) if records were kept since the last check."""
        records, self.records = self.records, []
        if records:
            shown = "\n".join(self.format(record) for record in records)
            pytest.fail(f"asyncmail logged at ERROR during the test:\n{shown}", pytrace=False)


_ERROR_RECORDS = pytest.StashKey[_ErrorRecords]()


@pytest.fixture(autouse=True)
def _fail_on_error_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if asyncmail logged at ERROR or above during it (setup and teardown too)."""
    if request.node.get_closest_marker("allow_error_logs") is not None:
        yield
        return
    handler = _ErrorRecords()
    logger = logging.getLogger(GUARDED_LOGGER)
    logger.addHandler(handler)
    request.node.stash[_ERROR_RECORDS] = handler
    try:
        yield
    finally:
        logger.removeHandler(handler)
    handler.check()  # what fixtures logged in setup or teardown: an error at teardown


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """What the test body logged fails the test itself (FAILED, not an error at teardown)."""
    yield
    handler = item.stash.get(_ERROR_RECORDS, None)
    if handler is not None:
        handler.check()
