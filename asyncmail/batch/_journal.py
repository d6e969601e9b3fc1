"""The write-ahead journal of a batch, and the per-recipient report made from it.

Who a recipient is
------------------
A resumed run must know which rows of the (possibly edited) list were already sent. It knows
a recipient by its **address and occurrence**: the first row for ann@example.com is
(ann@example.com, 1), a second row for the same address is (ann@example.com, 2), and so on.
Addresses compare ignoring the case of ASCII letters. Row numbers play no part, so deleting,
inserting or reordering rows never makes a resumed run send anyone a second copy. Editing a
row (its name, its variables, the case of its address) does not make it someone new either:
that person already got this mail, and is not sent another because of a typo fix.

An address listed more than once is that many recipients, each sent once. Its rows are told
apart by their order among themselves only: rows of other addresses may come and go, but
deleting or reordering rows *of that address* makes its k-th row stand for whatever its k-th
row was before. Rows that cannot be sent (``BadRow``) are numbered the same way, by whatever
their email column holds, and are tried again on every run.

In memory a recipient is a 64-bit digest of (occurrence, address), in compact tables (see
``_digests``): a resumed run of ten million rows holds about 350 MB (450 MB while a table
grows), building its report about 250 MB; dicts would take several gigabytes. Two
recipients of one list share a digest with odds around 3 in a million for ten million rows;
they would then share one status, so one could be skipped or sent again.

The journal file
----------------
An append-only text file next to the report (``report.csv.journal``), one short line per event::

    # asyncmail journal v2
    S 17 1 ann@example.com                          a send is about to start
    D 17 1 ann@example.com<TAB>250<TAB>2.0.0<TAB>1<TAB><id@host><TAB>OK queued
    F|U|X|K <row> <occurrence> <email><TAB>code<TAB>enhanced<TAB>attempts<TAB>message id<TAB>reply

``S`` is written, and flushed, *before* the first SMTP transaction of a message starts. So
after any crash a recipient whose last line is ``S`` may have been delivered: a resumed run
reports it UNKNOWN and does not send it again unless asked. Recipients whose last line is ``D``
are never sent again. ``X`` (suppressed: on the suppression list, not sent) is final for this
run only: a resumed run looks the address up again, and sends it if it is no longer listed.
``K`` (duplicate: a later row of an address, left out by ``--dedupe``) is final for this run
only too: a resumed run without ``--dedupe`` sends it.
The row number is only for the report (where the recipient was when last
journaled). The report CSV is derived from the journal (the last outcome of each recipient), so
the journal alone is the truth and the report can always be rebuilt.

A journal of format v1 (keyed by row number, written by earlier versions) is refused with an
explanation rather than misread: its row numbers cannot be trusted once the list was edited.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

from .._exceptions import ConfigError
from ._digests import DigestTable, digest

__all__ = [
    "REPORT_COLUMNS",
    "Identity",
    "Journal",
    "JournalState",
    "Occurrences",
    "ReportRow",
    "address_id",
    "identity",
    "journal_path",
    "write_report",
]

HEADER = "# asyncmail journal v2\n"
_V1_HEADER = "# asyncmail journal v1\n"
STARTED, DELIVERED, FAILED, UNKNOWN, SUPPRESSED = "S", "D", "F", "U", "X"
DUPLICATE = "K"
STATUS_NAMES = {
    DELIVERED: "delivered",
    FAILED: "failed",
    UNKNOWN: "unknown",
    SUPPRESSED: "suppressed",
    DUPLICATE: "duplicate",
}
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
_CODES = {STARTED: 1, DELIVERED: 2, FAILED: 3, UNKNOWN: 4, SUPPRESSED: 5, DUPLICATE: 6}
_NAMES = {v: k for k, v in _CODES.items()}
_UNSAFE = re.compile(r"[\s\\\ud800-\udfff]")


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
    """The address as one journal field: no whitespace, backslash or lone surrogate."""
    return _UNSAFE.sub("?", email) or "-"


class Identity(NamedTuple):
    """Who a row is to the journal: which row of its address it is, and a digest of both."""

    occurrence: int
    digest: int


def _address_key(email: str) -> bytes:
    """The address as the journal holds it, ASCII letters lower-cased: what identifies it."""
    return _safe_email(email).encode().lower()


def address_id(email: str) -> str:
    """The address as the journal tells recipients apart (ASCII letters lower-cased)."""
    return _address_key(email).decode()


def identity(email: str, occurrence: int) -> Identity:
    """The identity of the ``occurrence``-th row of the list for ``email``."""
    return Identity(occurrence, digest(b"%d %s" % (occurrence, _address_key(email))))


def _line_digest(occurrence: bytes, email: bytes) -> int:
    """The ``Identity.digest`` of a journal line's fields, as read (undecoded)."""
    return digest(occurrence + b" " + email.lower())


class Occurrences:
    """Numbers the rows of one pass over a list by address: 1, then 2 for its second row..."""

    def __init__(self) -> None:
        self._seen = DigestTable("I")

    def next(self, email: str) -> Identity:
        """The identity of the next row for ``email``."""
        key = _address_key(email)
        occurrence = self._seen.add(digest(key))
        return Identity(occurrence, digest(b"%d %s" % (occurrence, key)))


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportRow:
    """One recipient's line in the report.

    ``occurrence`` (which row of this address it is, from 1) goes to the journal, not the
    report CSV.
    """

    row: int
    email: str
    status: str
    occurrence: int = 1
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


def _check_format(path: Path) -> None:
    """Refuse a journal this version cannot read safely; a missing or empty one is fine."""
    try:
        with path.open(encoding="utf-8", errors="replace", newline="\n") as f:
            first = f.readline()
    except FileNotFoundError:
        return
    if not first or first == HEADER:
        return
    if first == _V1_HEADER:
        raise ConfigError(
            f"{path} was written by an older asyncmail (journal v1, which knows recipients "
            "by row number). This version knows them by address and cannot resume it safely. "
            "Finish the batch with the asyncmail version that started it, or delete the "
            "journal to start over (recipients it reached would get a second copy)."
        )
    raise ConfigError(f"{path} is not an asyncmail journal (its first line is {first!r})")


class Journal:
    """The append-only journal a batch writes as it goes.

    Every line is written and flushed to the operating system at once. That survives the
    process being killed (``kill -9``, a crash): the kernel holds the data. It would not
    survive the machine losing power, which would need an fsync per line, a cost out of
    proportion for a mail batch; a crash of the whole machine is the UNKNOWN case anyway.

    Raises:
        ConfigError: The file holds a journal of another format (see ``_check_format``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        is_new = not self.path.exists() or self.path.stat().st_size == 0
        if not is_new:
            _check_format(self.path)
        needs_newline = not is_new and not self._ends_with_newline()
        self._file: IO[str] = self.path.open(
            "a", encoding="utf-8", errors="backslashreplace", newline="\n"
        )
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

    def started(self, row: int, email: str, occurrence: int = 1) -> None:
        """Record that the first SMTP transaction for this recipient is about to start."""
        self._write(f"S {row} {occurrence} {_safe_email(email)}\n")

    def finished(self, outcome: ReportRow) -> None:
        """Record the outcome of a recipient (delivered, failed, unknown, suppressed or
        duplicate)."""
        tag = {v: k for k, v in STATUS_NAMES.items()}[outcome.status]
        fields = outcome.as_csv()
        rest = "\t".join(
            _escape(f) for f in (fields[3], fields[4], fields[7], fields[6], fields[5])
        )
        who = f"{outcome.row} {outcome.occurrence} {_safe_email(outcome.email)}"
        self._write(f"{tag} {who}\t{rest}\n")

    def close(self) -> None:
        """Close the file; every line is already on its way to disk."""
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# A complete line: tag, row, occurrence, address, and for outcomes the tab-separated details.
# Lines are matched as bytes: decoding only the few that make the report is much faster.
_LINE = re.compile(rb"([SDFUXK]) (\d+) (\d+) (\S+)(?:\t([^\n]*))?\n")
# Fields of a line: tag, row, occurrence, email, details (None for a start).
_Fields = tuple[bytes, bytes, bytes, bytes, bytes | None]


def _decode(field: bytes) -> str:
    return field.decode("utf-8", "replace")


class JournalState:
    """What a journal says about each recipient: its last event."""

    def __init__(self) -> None:
        self._last = DigestTable("B")
        self._in_flight: dict[int, _Fields] = {}

    @classmethod
    def replay(cls, path: str | Path) -> JournalState:
        """Read a journal; a line cut short by a kill is ignored.

        Raises:
            ConfigError: The file holds a journal of another format.
        """
        state = cls()
        path = Path(path)
        if path.exists():
            state._replay(path)
        return state

    def _replay(self, path: Path) -> None:
        _check_format(path)
        match, set_last, in_flight = _LINE.fullmatch, self._last.set, self._in_flight
        codes = {tag.encode(): code for tag, code in _CODES.items()}
        started = STARTED.encode()
        with path.open("rb") as f:
            for text in f:
                m = match(text)
                if m is None:
                    continue
                fields: _Fields = m.groups()  # type: ignore[assignment]
                key = _line_digest(fields[2], fields[3])
                set_last(key, codes[fields[0]])
                if fields[0] == started:
                    in_flight[key] = fields
                elif in_flight:
                    in_flight.pop(key, None)

    def in_flight(self) -> list[ReportRow]:
        """Recipients whose send started and never finished, as UNKNOWN rows, in journal order."""
        return [
            ReportRow(
                row=int(row),
                email=_decode(email),
                occurrence=int(occurrence),
                status="unknown",
                reply=INFLIGHT_REPLY,
            )
            for _, row, occurrence, email, _ in self._in_flight.values()
        ]

    def record(self, who: Identity, tag: str) -> None:
        """Update the state as a journal line about this recipient would."""
        self._last.set(who.digest, _CODES[tag])

    def last(self, who: Identity) -> str | None:
        """The recipient's last event (``S``, ``D``, ``F``, ``U``, ``X`` or ``K``), if any."""
        code = self._last.get(who.digest)
        return _NAMES[code] if code else None


def _report_fields(fields: _Fields) -> list[str]:
    """The report CSV fields of one journal line (see ``REPORT_COLUMNS``)."""
    tag, row, email = _decode(fields[0]), _decode(fields[1]), _decode(fields[3])
    if tag == STARTED:
        return [row, email, "unknown", "", "", INFLIGHT_REPLY, "", ""]
    details = _decode(fields[4] or b"")
    parts = details.split("\t")
    if "\\" in details:
        parts = [_unescape(f) for f in parts]
    if len(parts) < 5:
        parts += [""] * (5 - len(parts))
    code, enhanced, attempts, message_id, reply = parts[:5]
    return [row, email, STATUS_NAMES[tag], code, enhanced, reply, message_id, attempts]


def write_report(journal: str | Path, report: str | Path) -> dict[str, int]:
    """Write the report CSV: one line per recipient, its last outcome, in the order they finished.

    A recipient whose last event is a start is written as UNKNOWN (its send was cut off). Its
    row is the one it had when last journaled. Recipients deleted from the list since stay in
    the report with their last outcome: the journal is a history. The report is written to a
    temporary file and renamed over the old one, so a reader never sees half a report.

    Returns:
        The number of recipients per status name.

    Raises:
        ConfigError: The journal has another format.
    """
    journal, report = Path(journal), Path(report)
    _check_format(journal)
    # Pass 1: mark every line that is not the last of its recipient (or not a line at all).
    last = DigestTable("I")  # recipient -> 1 + number of its last line so far
    superseded = bytearray()  # per line of the file
    match = _LINE.fullmatch
    with journal.open("rb") as f:
        for number, text in enumerate(f):
            m = match(text)
            superseded.append(m is None)
            if m is not None and (previous := last.set(_line_digest(m[3], m[4]), number + 1)):
                superseded[previous - 1] = True
    del last
    # Pass 2: write the lines that were not superseded, in journal order.
    counts = dict.fromkeys(STATUS_NAMES.values(), 0)
    partial = report.with_name(report.name + ".partial")
    with (
        journal.open("rb") as f,
        partial.open("w", encoding="utf-8", errors="backslashreplace", newline="") as out_file,
    ):
        out = csv.writer(out_file)
        out.writerow(REPORT_COLUMNS)
        for number, text in enumerate(f):
            if number < len(superseded) and not superseded[number]:
                m = match(text)
                if m is not None:
                    fields = _report_fields(m.groups())  # type: ignore[arg-type]
                    counts[fields[2]] += 1
                    out.writerow(fields)
    partial.replace(report)
    return counts
