"""``asyncmail suppress list|add|remove|import``, and opening the list that ``--suppress`` names.

A list is a CSV file (``--list FILE.csv``, see ``CsvSuppressions``) or an outbox's
(``--outbox URL``). Exit codes: 0 done, 2 a usage error or a list that cannot be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._exceptions import ConfigError, OutboxError
from ..outbox._outbox import Outbox
from ..outbox._sqlite import SQLiteStore
from ..suppression._csv import COLUMNS, CsvSuppressions
from ..suppression._import import read_bounce_report
from ..suppression._model import REASONS, Suppression, Suppressions, normalize

__all__ = ["is_outbox_url", "open_suppressions", "suppress"]

T = TypeVar("T")
EXIT_ERROR = 2
_URL_SCHEMES = ("sqlite:", "redis:", "rediss:")


def is_outbox_url(spec: str) -> bool:
    """Whether ``--suppress`` names an outbox (a URL) rather than a CSV file."""
    return spec.lower().startswith(_URL_SCHEMES)


@contextlib.asynccontextmanager
async def open_suppressions(spec: str, *, must_exist: bool = False) -> AsyncIterator[Suppressions]:
    """The list ``spec`` names, opened (and, for a file, read) for the block.

    Args:
        spec: A CSV file's path, or an outbox's URL.
        must_exist: Refuse an outbox URL naming a SQLite file that does not exist (opening
            would create an empty outbox, and a typo would read as an empty list).

    Raises:
        ConfigError: A bad URL, or a file that is not a suppression list.
        OutboxError: The outbox cannot be used.
    """
    if not is_outbox_url(spec):
        suppressions = CsvSuppressions(spec)
        await suppressions.suppressed([])  # (reads it now: a bad file stops us before any mail)
        yield suppressions
        return
    box = Outbox(spec)
    store = box.store
    if must_exist and isinstance(store, SQLiteStore) and not await anyio.Path(store.path).exists():
        raise ConfigError(f"no outbox at {store.url}: {store.path} does not exist")
    async with box:
        yield box.suppressions


def _run(coro: Awaitable[T]) -> T:
    async def go() -> T:
        return await coro

    try:
        return asyncio.run(go())
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        raise click.exceptions.Exit(130) from None
    except (OutboxError, ConfigError) as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_ERROR) from None


def _with_list(
    list_path: Path | None,
    outbox_url: str | None,
    op: Callable[[Suppressions], Awaitable[T]],
    *,
    must_exist: bool = False,
) -> T:
    if (list_path is None) == (outbox_url is None):
        raise click.UsageError("name the list: --list FILE.csv or --outbox URL (one of them)")
    spec = outbox_url if outbox_url is not None else str(list_path)

    async def go() -> T:
        async with open_suppressions(spec, must_exist=must_exist) as suppressions:
            return await op(suppressions)

    return _run(go())


def _list_options(f: Callable[..., None]) -> Callable[..., None]:
    f = click.option(
        "--outbox",
        "outbox_url",
        help="The outbox whose list it is: sqlite:////abs/path.db or redis://host:6379/0?queue=N.",
    )(f)
    return click.option(
        "--list",
        "list_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A suppression list in a CSV file (created by the first add).",
    )(f)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 'es' if word.endswith('ss') else 's'}"


@click.group()
def suppress() -> None:
    """The suppression list: addresses never sent to again (hard bounces, complaints).

    'asyncmail batch --suppress' and 'asyncmail worker --suppress' honour and feed it.
    """


@suppress.command(name="list")
@_list_options
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (the list file's columns).")
def list_(list_path: Path | None, outbox_url: str | None, as_csv: bool) -> None:
    """Every address on the list, oldest first."""

    async def read(suppressions: Suppressions) -> list[Suppression]:
        return [entry async for entry in suppressions.entries()]

    entries = _with_list(list_path, outbox_url, read, must_exist=True)
    entries.sort(key=lambda e: e.added_at)
    if as_csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(COLUMNS)
        for e in entries:
            added = e.added_at.isoformat()
            out.writerow([e.address, e.reason, e.status, e.diagnostic, added, e.source])
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("address", "reason", "status", "added", "source", "diagnostic"):
        table.add_column(column, overflow="fold")
    for e in entries:
        added = e.added_at.strftime("%Y-%m-%d %H:%M:%SZ")
        cells = (e.address, e.reason, e.status, added, e.source, e.diagnostic)
        table.add_row(*(Text(c) for c in cells))  # (never read as markup)
    Console(highlight=False, soft_wrap=False).print(table)
    click.echo(f"{_plural(len(entries), 'address')} suppressed")


@suppress.command()
@_list_options
@click.argument("addresses", nargs=-1, required=True)
@click.option("--reason", type=click.Choice(REASONS), default="manual", show_default=True)
@click.option("--status", default="", help="The enhanced status code, such as 5.1.1.")
@click.option("--note", default="", help="Why (kept as the entry's diagnostic).")
def add(
    list_path: Path | None,
    outbox_url: str | None,
    addresses: tuple[str, ...],
    reason: str,
    status: str,
    note: str,
) -> None:
    """Add ADDRESSES to the list (an address already listed keeps its entry)."""
    try:
        entries = [
            Suppression.now(a, reason, status=status, diagnostic=note, source="cli")
            for a in addresses
        ]
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    added = _with_list(list_path, outbox_url, lambda s: s.add(entries))
    already = len({e.key for e in entries}) - added
    click.echo(f"added {added}" + (f", {already} already listed" if already else ""))


@suppress.command()
@_list_options
@click.argument("addresses", nargs=-1, required=True)
def remove(list_path: Path | None, outbox_url: str | None, addresses: tuple[str, ...]) -> None:
    """Take ADDRESSES off the list: they are sent to again."""
    removed = _with_list(
        list_path, outbox_url, lambda s: s.remove(addresses), must_exist=outbox_url is not None
    )
    missing = len({normalize(a) for a in addresses}) - removed
    click.echo(f"removed {removed}" + (f", {missing} not listed" if missing > 0 else ""))


@suppress.command(name="import")
@_list_options
@click.argument("report", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_(list_path: Path | None, outbox_url: str | None, report: Path) -> None:
    """Add the hard bounces and complaints of REPORT ('asyncmail bounces --report')."""
    try:
        found = read_bounce_report(report)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    added = _with_list(list_path, outbox_url, lambda s: s.add(found.entries))
    already = len(found.entries) - added
    click.echo(
        f"imported {added} new: {_plural(found.hard, 'hard bounce')}, "
        f"{_plural(found.complaints, 'complaint')} in {report}"
        + (f"; {already} already listed" if already else "")
        + f"; {found.skipped} other rows skipped"
    )
