"""Recipient lists: CSV or JSON Lines, streamed one row at a time, bad rows kept as rows.

A file of ten million rows is read with constant memory: ``read_recipients()`` is a generator
over the open file. A row that cannot be used (no valid address, a missing column, broken
JSON, bytes that are not UTF-8) comes out as a ``BadRow`` in its place instead of stopping the
iteration, so a batch can report it and carry on.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .._exceptions import ConfigError
from ..message._address import Address

__all__ = [
    "BadRow",
    "Recipient",
    "count_rows",
    "detect_delimiter",
    "read_recipients",
]

EMAIL_COLUMN = "email"
NAME_COLUMN = "name"
CSV_SUFFIXES = frozenset({".csv"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
#: The CSV delimiters told apart by ``detect_delimiter``: spreadsheets in many European
#: locales save with ``;``, some exports with a tab or a pipe.
DELIMITERS = (",", ";", "\t", "|")

# Deliberately loose: one @, something on both sides, no spaces or brackets. The Message
# validates addresses fully; this only catches rows that are obviously not an address.
_ADDRESS = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\".]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")

Format = Literal["csv", "jsonl"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipient:
    """One usable row of a recipient list.

    Attributes:
        row: The 1-based row number (data rows for CSV, lines for JSON Lines).
        email: The address from the ``email`` column.
        name: The display name from the ``name`` column, if any.
        variables: Every column of the row, ``email`` and ``name`` included, for templates.
    """

    row: int
    email: str
    name: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str | Address:
        """The recipient as a Message takes it: named when the row has a name."""
        return Address(self.name, self.email) if self.name else self.email


@dataclass(frozen=True, slots=True, kw_only=True)
class BadRow:
    """A row that cannot be sent to, and why.

    Attributes:
        row: The 1-based row number.
        email: Whatever was in the ``email`` column (may be empty or invalid).
        reason: What is wrong with the row, for the report.
    """

    row: int
    email: str
    reason: str


def detect_format(path: Path) -> Format:
    """The list format from the file suffix: ``.csv``, or ``.jsonl``/``.ndjson``."""
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    raise ConfigError(f"{path}: unknown recipient list format; use .csv, .jsonl or .ndjson")


def detect_delimiter(header: str) -> str:
    """The delimiter of a CSV header line: the one of ``DELIMITERS`` that makes an ``email``
    column, the most columns breaking ties; a comma when none does.
    """
    best, best_columns = ",", 0
    for candidate in DELIMITERS:
        try:
            fields = next(csv.reader([header], delimiter=candidate), [])
        except csv.Error:
            continue
        if EMAIL_COLUMN in (f.strip() for f in fields) and len(fields) > best_columns:
            best, best_columns = candidate, len(fields)
    return best


def read_recipients(
    path: str | Path, *, format: Format | None = None, delimiter: str | None = None
) -> Iterator[Recipient | BadRow]:
    """Stream the rows of a CSV (with a header row) or JSON Lines recipient list.

    CSV needs an ``email`` column; ``name`` is optional; every column is a template
    variable. The delimiter (``,``, ``;``, tab or ``|``) is read off the header line unless
    ``delimiter`` is given. A UTF-8 byte-order mark is dropped. JSON Lines holds one object
    per line with the same keys; values may be any JSON. Blank JSON lines are skipped (they
    still count as rows, so numbers match line numbers).

    Raises:
        ConfigError: The file is missing, its format is unknown, or a CSV header has no
            ``email`` column. Problems with single rows are yielded as ``BadRow``.
    """
    file = Path(path)
    fmt = format or detect_format(file)
    if not file.is_file():
        raise ConfigError(f"recipient list not found: {file}")
    if fmt == "csv":
        return _read_csv(file, delimiter)
    return _read_jsonl(file)


def _check(row: int, values: Mapping[str, Any]) -> Recipient | BadRow:
    email = values.get(EMAIL_COLUMN)
    if not isinstance(email, str):
        shown = "" if email is None else str(email)
        return BadRow(row=row, email=shown, reason="no email address")
    email = email.strip()
    if not _ADDRESS.fullmatch(email):
        reason = "empty email address" if not email else f"invalid email address: {email!r}"
        return BadRow(row=row, email=email, reason=reason)
    name = values.get(NAME_COLUMN)
    if name is not None and not isinstance(name, str):
        name = str(name)
    return Recipient(
        row=row, email=email, name=(name.strip() or None) if name else None, variables=values
    )


def _header(reader: Iterator[list[str]], file: Path) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise ConfigError(f"{file}: empty recipient list") from None
    except csv.Error as exc:
        raise ConfigError(f"{file}: unreadable CSV header: {exc}") from None
    header = [h.strip() for h in header]
    if EMAIL_COLUMN not in header:
        raise ConfigError(f"{file}: the CSV header needs an {EMAIL_COLUMN!r} column; got {header}")
    if len(set(header)) != len(header):
        raise ConfigError(f"{file}: duplicate column names in the CSV header: {header}")
    return header


def _read_csv(file: Path, delimiter: str | None) -> Iterator[Recipient | BadRow]:
    # utf-8-sig drops the byte-order mark spreadsheets write; surrogateescape turns bytes
    # that are not UTF-8 into a per-row failure instead of an exception that ends the file.
    with file.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        if delimiter is None:
            delimiter = detect_delimiter(f.readline())
            f.seek(0)
            if f.read(1) != "\ufeff":  # (seek(0) brings the byte-order mark back)
                f.seek(0)
        reader = csv.reader(f, strict=True, delimiter=delimiter)
        header = _header(reader, file)
        email_at = header.index(EMAIL_COLUMN)
        row = 0
        while True:
            row += 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield BadRow(row=row, email="", reason=f"unreadable CSV row: {exc}")
                continue
            if not fields or fields == [""]:
                row -= 1  # a blank line is not a row
                continue
            email = fields[email_at].strip() if email_at < len(fields) else ""
            if any(_SURROGATE.search(v) for v in fields):
                yield BadRow(row=row, email=_clean(email), reason="the row is not valid UTF-8")
            elif len(fields) != len(header):
                missing = header[len(fields) :]
                reason = (
                    f"missing column(s): {', '.join(missing)}"
                    if missing
                    else f"{len(fields)} fields, but the header has {len(header)}"
                )
                yield BadRow(row=row, email=email, reason=reason)
            else:
                yield _check(row, dict(zip(header, fields, strict=True)))


def _read_jsonl(file: Path) -> Iterator[Recipient | BadRow]:
    with file.open("rb") as f:
        for row, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                values = json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                yield BadRow(row=row, email="", reason=f"invalid JSON: {exc}")
                continue
            if not isinstance(values, dict):
                yield BadRow(row=row, email="", reason="the line is not a JSON object")
                continue
            yield _check(row, values)


def _clean(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


def count_rows(path: str | Path) -> int:
    """Roughly how many rows a list has, by counting line ends; fast, for progress and ETA.

    A CSV field with a line break in it makes the count too high; that only skews the ETA.
    """
    file = Path(path)
    newlines, last = 0, b"\n"
    with file.open("rb") as f:
        while chunk := f.read(1 << 20):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    lines = newlines + (last != b"\n")
    return max(0, lines - 1) if detect_format(file) == "csv" else lines
