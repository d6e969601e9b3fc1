"""The write-ahead journal of a batch, and the per-recipient report made from it.

The journal is an append-only text file next to the report (``report.csv.journal``), one
short line per event, keyed by row number and address::

    S 17 ann@example.com                                  a send is about to start
    D 17 ann@example.com<TAB>250<TAB>2.0.0<TAB>1<TAB><id@host><TAB>OK queued
    F|U <row> <email><TAB>code<TAB>enhanced<TAB>attempts<TAB>message id<TAB>reply

``S`` is written, and flushed, *before* the first SMTP transaction of a message starts. So
after any crash a row whose last line is ``S`` may have been delivered: a resumed run reports
it UNKNOWN and does not send it again unless asked. Rows whose last line is ``D`` are never
sent again. The report CSV is derived from the journal (the last outcome of each row), so the
journal alone is the truth and the report can always be rebuilt.

Replaying keeps two small arrays indexed by row number (one status byte and a CRC-32 of the
address per row, 5 bytes a row), so resuming a ten-million-row batch costs tens of megabytes.
"""

from __future__ import annotations

import csv
import re
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "REPORT_COLUMNS",
    "Journal",
    "JournalState",
    "ReportRow",
    "in_flight_rows",
    "journal_path",
    "write_report",
]

HEADER = "# asyncmail journal v1\n"
STARTED, DELIVERED, FAILED, UNKNOWN = "S", "D", "F", "U"
STATUS_NAMES = {DELIVERED: "delivered", FAILED: "failed", UNKNOWN: "unknown"}
REPORT_COLUMNS = (
    "row",
    "email",
    "status",
    "smtp_code",
    "enhanced_code",
    "reply",
    "message_id",
    "attempts",
)
INFLIGHT_REPLY = "in flight when a previous run stopped: maybe delivered"
_CODES = {STARTED: 1, DELIVERED: 2, FAILED: 3, UNKNOWN: 4}
_NAMES = {v: k for k, v in _CODES.items()}
_UNSAFE = re.compile(r"[\s\\]")


def journal_path(report: str | Path) -> Path:
    """Where the journal of a report lives: next to it, with ``.journal`` appended."""
    report = Path(report)
    return report.with_name(report.name + ".journal")


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n")


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    table = {"\\": "\\", "t": "\t", "r": "\r", "n": "\n"}
    return re.sub(r"\\(.)", lambda m: table.get(m.group(1), m.group(1)), text)


def _safe_email(email: str) -> str:
    return _UNSAFE.sub("?", email) or "-"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportRow:
    """One recipient's line in the report."""

    row: int
    email: str
    status: str
    smtp_code: int | None = None
    enhanced_code: str | None = None
    reply: str = ""
    message_id: str | None = None
    attempts: int | None = None

    def as_csv(self) -> list[str]:
        """The row as report CSV fields, in ``REPORT_COLUMNS`` order."""
        return [
            str(self.row),
            self.email,
            self.status,
            "" if self.smtp_code is None else str(self.smtp_code),
            self.enhanced_code or "",
            self.reply,
            self.message_id or "",
            "" if self.attempts is None else str(self.attempts),
        ]


class Journal:
    """The append-only journal a batch writes as it goes.

    Every line is written and flushed to the operating system at once. That survives the
    process being killed (``kill -9``, a crash): the kernel holds the data. It would not
    survive the machine losing power, which would need an fsync per line, a cost out of
    proportion for a mail batch; a crash of the whole machine is the UNKNOWN case anyway.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        is_new = not self.path.exists() or self.path.stat().st_size == 0
        needs_newline = not is_new and not self._ends_with_newline()
        self._file: IO[str] = self.path.open("a", encoding="utf-8", newline="\n")
        if is_new:
            self._write(HEADER)
        elif needs_newline:  # a line cut short by a kill: end it so the next line parses
            self._write("\n")

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, 2)
            return f.read(1) == b"\n"

    def _write(self, line: str) -> None:
        self._file.write(line)
        self._file.flush()

    def started(self, row: int, email: str) -> None:
        """Record that the first SMTP transaction for this row is about to start."""
        self._write(f"S {row} {_safe_email(email)}\n")

    def finished(self, outcome: ReportRow) -> None:
        """Record the outcome of a row (delivered, failed or unknown)."""
        tag = {v: k for k, v in STATUS_NAMES.items()}[outcome.status]
        fields = outcome.as_csv()
        rest = "\t".join(
            _escape(f) for f in (fields[3], fields[4], fields[7], fields[6], fields[5])
        )
        self._write(f"{tag} {outcome.row} {_safe_email(outcome.email)}\t{rest}\n")

    def close(self) -> None:
        """Close the file; every line is already on its way to disk."""
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# A complete line: tag, row, address, and for outcomes the tab-separated details.
_LINE = re.compile(r"([SDFU]) (\d+) (\S+)(?:\t([^\n]*))?\n")


def _read_lines(path: Path) -> Iterator[tuple[str, int, str, str | None]]:
    """Tag, row, address and raw details of each complete line; anything else is skipped."""
    match = _LINE.fullmatch
    with path.open(encoding="utf-8", errors="replace", newline="\n") as f:
        for line in f:
            m = match(line)
            if m is not None:
                yield m.group(1), int(m.group(2)), m.group(3), m.group(4)


class JournalState:
    """What a journal says about each row: the last event, and for which address."""

    def __init__(self) -> None:
        self._status = bytearray()
        self._crc = array("I")
        self.in_flight: dict[int, str] = {}
        """Rows (to their address) whose send started and never finished, in journal order."""

    @classmethod
    def replay(cls, path: str | Path) -> JournalState:
        """Read a journal; a line cut short by a kill is ignored."""
        state = cls()
        path = Path(path)
        if path.exists():
            in_flight = state.in_flight
            for tag, row, email, _ in _read_lines(path):
                state._set(row, email, tag)
                if tag == STARTED:
                    in_flight[row] = email
                elif in_flight:
                    in_flight.pop(row, None)
        return state

    def _set(self, row: int, email: str, tag: str) -> None:
        if row >= len(self._status):
            grow = max(row + 1, 2 * len(self._status)) - len(self._status)
            self._status.extend(bytes(grow))
            self._crc.extend(array("I", bytes(4 * grow)))
        self._status[row] = _CODES[tag]
        self._crc[row] = zlib.crc32(email.encode())

    def record(self, row: int, email: str, tag: str) -> None:
        """Update the state as a journal line would."""
        self._set(row, _safe_email(email), tag)

    def last(self, row: int, email: str) -> str | None:
        """The row's last event (``S``, ``D``, ``F`` or ``U``), if it was about this address."""
        if row >= len(self._status) or not self._status[row]:
            return None
        if self._crc[row] != zlib.crc32(_safe_email(email).encode()):
            return None
        return _NAMES[self._status[row]]


def in_flight_rows(path: str | Path) -> list[tuple[int, str]]:
    """The (row, email) pairs of a journal whose last event is a start, in journal order."""
    return list(JournalState.replay(path).in_flight.items())


def _report_fields(tag: str, row: int, email: str, details: str | None) -> list[str]:
    """The report CSV fields of one journal line (see ``REPORT_COLUMNS``)."""
    if tag == STARTED:
        return [str(row), email, "unknown", "", "", INFLIGHT_REPLY, "", ""]
    details = details or ""
    fields = details.split("\t")
    if "\\" in details:
        fields = [_unescape(f) for f in fields]
    if len(fields) < 5:
        fields += [""] * (5 - len(fields))
    code, enhanced, attempts, message_id, reply = fields[:5]
    return [str(row), email, STATUS_NAMES[tag], code, enhanced, reply, message_id, attempts]


def write_report(journal: str | Path, report: str | Path) -> dict[str, int]:
    """Write the report CSV: one line per row, its last outcome, in the order rows finished.

    A row whose last event is a start is written as UNKNOWN (its send was cut off). The
    report is written to a temporary file and renamed over the old one, so a reader never
    sees half a report.

    Returns:
        The number of rows per status name.
    """
    journal, report = Path(journal), Path(report)
    last = array("I")  # per row: 1 + index of its last line among all parsed lines
    for index, (_, row, _, _) in enumerate(_read_lines(journal), start=1):
        if row >= len(last):
            last.extend(array("I", bytes(4 * (max(row + 1, 2 * len(last)) - len(last)))))
        last[row] = index
    counts = dict.fromkeys(STATUS_NAMES.values(), 0)
    partial = report.with_name(report.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(REPORT_COLUMNS)
        for index, (tag, row, email, details) in enumerate(_read_lines(journal), start=1):
            if last[row] == index:
                fields = _report_fields(tag, row, email, details)
                counts[fields[2]] += 1
                out.writerow(fields)
    partial.replace(report)
    return counts
