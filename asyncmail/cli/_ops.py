"""The outbox's commands: ``asyncmail worker`` and ``asyncmail outbox status|list|retry|purge``.

Exit codes: 0 done; 1 ``status --key`` found no such message; 2 a usage error or an outbox
that cannot be used (unreachable, foreign, another schema: one line, no traceback); 130 a
worker cut off by a second signal, or Ctrl-C before the worker listened for signals.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from .._exceptions import ConfigError, OutboxError
from ..outbox._model import FINAL_STATES, OutboxState, OutboxStatistics
from ..outbox._outbox import Outbox
from ..outbox._sqlite import SQLiteStore
from ._dkim import dkim_option, dkim_signers
from ._outbox_view import (
    entries_table,
    parse_duration,
    statistics_json,
    statistics_lines,
    status_json,
    status_lines,
)
from ._worker import WorkerOptions, run_worker

__all__ = ["outbox", "worker"]

T = TypeVar("T")
EXIT_NOT_FOUND, EXIT_ERROR, EXIT_INTERRUPTED = 1, 2, 130
FINAL_NAMES = sorted(state.value for state in FINAL_STATES)

outbox_option = click.option(
    "--outbox",
    "outbox_url",
    envvar="ASYNCMAIL_OUTBOX",
    show_envvar=True,
    required=True,
    help="The outbox: sqlite:////abs/path.db or redis://host:6379/0?queue=NAME.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """``7d``, ``12h``, ``15m``, ``90s`` or a number of seconds, as seconds."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _fail(message: str) -> click.exceptions.Exit:
    click.echo(f"error: {message}", err=True)
    return click.exceptions.Exit(EXIT_ERROR)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; an outbox that cannot be used or a bad option exit 2, in one line."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    except (OutboxError, ConfigError) as exc:
        raise _fail(str(exc)) from None


def _with_outbox(url: str, op: Callable[[Outbox], Awaitable[T]]) -> T:
    """Open the outbox at ``url``, run ``op`` on it, and close it."""
    try:
        box = Outbox(url)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    store = box.store
    if isinstance(store, SQLiteStore) and not Path(store.path).exists():
        # (opening would create an empty outbox: a typo would then read as "nothing queued")
        raise _fail(
            f"no outbox at {store.url}: {store.path} does not exist (sqlite:////abs/path.db "
            "has four slashes; sqlite:///rel/path.db is relative to this directory)"
        )

    async def go() -> T:
        try:
            async with box:
                return await op(box)
        except OSError as exc:  # (a store that let a network error through)
            raise OutboxError(f"cannot use the outbox {box.store.url}: {exc}") from exc

    return _run(go())


def _print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


# --- worker -----------------------------------------------------------------------------


@click.command()
@outbox_option
@click.option(
    "--url",
    envvar="ASYNCMAIL_URL",
    show_envvar=True,
    help="The SMTP server, such as smtps://user:pass@smtp.example.com (never echoed back).",
)
@click.option("--concurrency", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--rate", help="Messages at most per time unit for every worker, such as 200/s.")
@click.option(
    "--grace",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds the sends in progress get to finish after SIGTERM or Ctrl-C.",
)
@click.option(
    "--lease-seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="How long a message stays with a worker that stopped renewing it (one that died).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on this port (0: any free one); needs asyncmail[metrics].",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option(
    "--suppress",
    is_flag=True,
    help="Add every recipient a server refuses as non-existent (5.1.x) to the outbox's "
    "suppression list (see 'asyncmail suppress').",
)
@click.option(
    "--metrics-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between refreshes of the queue depth and rate gauges.",
)
@dkim_option
def worker(
    outbox_url: str,
    url: str | None,
    concurrency: int,
    rate: str | None,
    grace: float,
    lease_seconds: float,
    metrics_port: int | None,
    metrics_host: str,
    metrics_interval: float,
    suppress: bool,
    dkim: tuple[str, ...],
) -> None:
    """Deliver the outbox's messages until SIGTERM or Ctrl-C.

    The first signal stops it gracefully: no new messages, those taken but not started go
    back to the outbox, the sends in progress get --grace seconds (exit 0). A second signal
    stops it at once (exit 130): a message whose final dot may have left ends UNKNOWN, every
    other one goes back to the outbox.
    """
    try:
        signers = dkim_signers(dkim)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    options = WorkerOptions(
        outbox=outbox_url,
        url=url,
        concurrency=concurrency,
        rate=rate,
        grace=grace,
        lease_seconds=lease_seconds,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        metrics_interval=metrics_interval,
        suppress=suppress,
        dkim=signers,
    )
    sys.exit(_run(run_worker(options, click.echo)))


# --- outbox -----------------------------------------------------------------------------


@click.group()
def outbox() -> None:
    """Look into an outbox and act on its messages (see also: asyncmail worker)."""


@outbox.command()
@outbox_option
@click.option("--key", help="Show this message: its state and each recipient's refusal.")
@json_option
def status(outbox_url: str, key: str | None, as_json: bool) -> None:
    """Counts by state, the oldest waiting message and the rate; or one message's status."""
    if key is not None:
        found = _with_outbox(outbox_url, lambda box: box.status(key))
        if found is None:
            click.echo(f"no message under the key {key!r}", err=True)
            sys.exit(EXIT_NOT_FOUND)
        if as_json:
            _print_json(status_json(found))
        else:
            click.echo("\n".join(status_lines(found)))
        return

    async def read(box: Outbox) -> tuple[str, OutboxStatistics]:
        return box.store.url, await box.statistics()

    shown_url, stats = _with_outbox(outbox_url, read)
    if as_json:
        _print_json(statistics_json(shown_url, stats))
    else:
        click.echo("\n".join(statistics_lines(shown_url, stats)))


@outbox.command(name="list")
@outbox_option
@click.option("--state", type=click.Choice([s.value for s in OutboxState]), help="Only these.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@json_option
def list_(outbox_url: str, state: str | None, limit: int, as_json: bool) -> None:
    """The most recently changed messages: key, state, attempts, updated, error."""
    entries = _with_outbox(outbox_url, lambda box: box.entries(state, limit))
    if as_json:
        _print_json([status_json(entry) for entry in entries])
    else:
        Console(highlight=False, soft_wrap=False).print(entries_table(entries))


@outbox.command()
@outbox_option
@click.option("--key", "keys", multiple=True, help="Only this message; repeat for more.")
def retry(outbox_url: str, keys: tuple[str, ...]) -> None:
    """Queue FAILED and UNKNOWN messages again (all of them, or those of --key)."""
    count = _with_outbox(outbox_url, lambda box: box.retry_failed(list(keys) or None))
    click.echo(f"queued {count} message{'' if count == 1 else 's'} again")


@outbox.command()
@outbox_option
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(FINAL_NAMES),
    help="Only messages that ended in this state; repeat for more (default: all three).",
)
@click.option(
    "--older-than",
    default="0s",
    show_default=True,
    callback=_duration,
    help="Only messages that ended this long ago or more: 7d, 12h, 30m, 90s.",
)
def purge(outbox_url: str, states: tuple[str, ...], older_than: float) -> None:
    """Delete messages that ended (delivered, failed, unknown)."""
    chosen = list(states) or FINAL_NAMES
    count = _with_outbox(outbox_url, lambda box: box.purge(chosen, older_than=older_than))
    click.echo(f"deleted {count} message{'' if count == 1 else 's'} ({', '.join(chosen)})")
