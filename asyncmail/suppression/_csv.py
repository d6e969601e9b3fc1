"""``CsvSuppressions``: a suppression list in a CSV file that people can read and edit.

The file has a header and one row per address::

    address,reason,status,diagnostic,added_at,source
    ann@example.com,hard-bounce,5.1.1,550 5.1.1 no such user,2026-12-02T05:43:55+00:00,worker

It is read once, when first needed, into memory (a set of normalised addresses: a million
entries take about 100 MB). ``add`` appends rows and fsyncs before it returns, so a listed
address survives a crash; ``remove`` rewrites the file to a temporary one and renames it
over the old one, so a reader never sees half a file. A missing file is an empty list,
created by the first ``add``.

One process at a time: two processes adding to one file would interleave their appends
safely (each row is one ``write``), but neither sees the other's rows until it is opened
again, and a ``remove`` in one drops the rows the other appended since it read the file.
For many processes, use an outbox's list (``Outbox(...).suppressions``).
"""

from __future__ import annotations

import csv
import io
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import anyio

from .._exceptions import ConfigError
from ._model import Suppression, normalize

__all__ = ["COLUMNS", "CsvSuppressions", "read_entries"]

T = TypeVar("T")
R = TypeVar("R")

COLUMNS = ("address", "reason", "status", "diagnostic", "added_at", "source")


def _row(entry: Suppression) -> list[str]:
    return [
        entry.address,
        entry.reason,
        entry.status,
        entry.diagnostic,
        entry.added_at.isoformat(),
        entry.source,
    ]


def _csv_text(entries: Iterable[Suppression], *, header: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(COLUMNS)
    writer.writerows(_row(e) for e in entries)
    return out.getvalue()


def read_entries(path: Path) -> list[Suppression]:
    """Every entry of the file at ``path`` (none if it does not exist).

    Raises:
        ConfigError: The file is not a suppression list, naming the line that is wrong.
    """
    try:
        f = path.open(encoding="utf-8", newline="")
    except FileNotFoundError:
        return []
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        if tuple(h.strip().lower() for h in header) != COLUMNS:
            raise ConfigError(
                f"{path} line 1: not a suppression list: the header must be "
                f"{','.join(COLUMNS)}, not {','.join(header)!r}"
            )
        entries = []
        for values in reader:
            if not values:
                continue
            line = reader.line_num
            if len(values) != len(COLUMNS):
                raise ConfigError(
                    f"{path} line {line}: {len(values)} fields, expected {len(COLUMNS)}"
                )
            address, reason, status, diagnostic, added_at, source = values
            try:
                entries.append(
                    Suppression(
                        address=address,
                        reason=reason,
                        status=status,
                        diagnostic=diagnostic,
                        added_at=datetime.fromisoformat(added_at),
                        source=source,
                    )
                )
            except (ConfigError, ValueError) as exc:
                raise ConfigError(f"{path} line {line}: {exc}") from None
        return entries


class CsvSuppressions:
    """A suppression list in a CSV file (see the module documentation).

    Args:
        path: The file; it need not exist yet.

    Its methods raise ``ConfigError`` when the file is not a suppression list (naming the
    line that is wrong) or cannot be read or written.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._entries: dict[str, Suppression] | None = None
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        size = "not loaded" if self._entries is None else f"{len(self._entries)} addresses"
        return f"<CsvSuppressions {str(self.path)!r} {size}>"

    async def _load(self) -> dict[str, Suppression]:
        if self._entries is None:
            entries = await self._io(read_entries, self.path, doing="read")
            self._entries = {e.key: e for e in entries}
        return self._entries

    async def _io(self, op: Callable[[T], R], arg: T, *, doing: str) -> R:
        """Run file I/O on a thread; an OSError becomes a ConfigError naming the file."""
        try:
            return await anyio.to_thread.run_sync(op, arg)
        except OSError as exc:
            raise ConfigError(f"cannot {doing} the suppression list {self.path}: {exc}") from exc

    async def suppressed(self, addresses: Iterable[str]) -> set[str]:
        known = await self._load()
        return {a for a in addresses if normalize(a) in known}

    async def add(self, entries: Iterable[Suppression]) -> int:
        async with self._lock:
            known = await self._load()
            new: dict[str, Suppression] = {}
            for entry in entries:
                if entry.key not in known and entry.key not in new:
                    new[entry.key] = entry
            if new:
                await self._io(self._append, list(new.values()), doing="write")
                known.update(new)
            return len(new)

    def _append(self, entries: list[Suppression]) -> None:
        header = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", encoding="utf-8", newline="") as f:
            if not header and not self._ends_with_newline():
                f.write("\n")
            f.write(_csv_text(entries, header=header))
            f.flush()
            os.fsync(f.fileno())

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    async def remove(self, addresses: Iterable[str]) -> int:
        async with self._lock:
            known = await self._load()
            gone = {normalize(a) for a in addresses} & known.keys()
            if gone:
                kept = [e for key, e in known.items() if key not in gone]
                await self._io(self._rewrite, kept, doing="rewrite")
                for key in gone:
                    del known[key]
            return len(gone)

    def _rewrite(self, entries: list[Suppression]) -> None:
        directory = self.path.parent
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            if self.path.exists():  # (mkstemp makes it private: keep the file's own mode)
                os.chmod(temp, stat.S_IMODE(self.path.stat().st_mode))
            with open(fd, "w", encoding="utf-8", newline="") as f:
                f.write(_csv_text(entries, header=True))
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    async def entries(self) -> AsyncIterator[Suppression]:
        for entry in list((await self._load()).values()):
            yield entry
