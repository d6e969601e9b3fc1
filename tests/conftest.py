"""Suite-wide options: ``--uvloop`` runs the async tests on uvloop instead of asyncio's loop."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest


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
