"""What every command shares: the URL option, the console, usage errors, running a coroutine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import click
from rich.console import Console

from .._exceptions import ConfigError
from ._batch import BatchUsageError
from ._run import EXIT_INTERRUPTED

__all__ = ["EXIT_USAGE", "console", "run", "url_option", "usage"]

EXIT_USAGE = 2
T = TypeVar("T")

url_option = click.option(
    "--url",
    envvar="ASYNCMAIL_URL",
    show_envvar=True,
    help="The SMTP server, such as smtps://user:pass@smtp.example.com (never echoed back).",
)


def console(stderr: bool = False) -> Console:
    """A Rich console without highlighting (addresses and numbers stay plain)."""
    return Console(stderr=stderr, highlight=False)


def usage(message: str) -> click.UsageError:
    """A usage error (exit code 2)."""
    return click.UsageError(message)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; Ctrl-C exits 130, configuration errors exit 2."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except (ConfigError, BatchUsageError) as exc:
        raise usage(str(exc)) from None


def quiet_outcomes() -> None:
    """Keep the engine's per-message WARNING lines (``asyncmail.outcomes``) off the terminal
    while the current command runs: ``send`` and ``batch`` report every outcome themselves
    (the line, the report file). The level is put back when the command ends, so a program
    that runs the CLI in-process (a test's CliRunner) keeps its logging as it was."""
    outcomes = logging.getLogger("asyncmail.outcomes")
    level = outcomes.level
    outcomes.setLevel(logging.ERROR)
    click.get_current_context().call_on_close(lambda: outcomes.setLevel(level))
