"""Reading the report of ``asyncmail bounces --report`` into suppressions.

The report has the columns ``source,recipient,action,status,diagnostic,message_id,
verp_recipient,hard,kind``. A row becomes a suppression when it is a hard bounce
(``hard`` is ``true``: reason ``hard-bounce``) or a complaint (``kind`` is ``arf`` or
``action`` is ``complained``: reason ``complaint``). The address is ``verp_recipient``
when the bounce came back to a VERP address (the recipient it was sent to, for certain),
else ``recipient`` (what the bounce says). Every other row is skipped.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .._exceptions import ConfigError
from ._model import Suppression

__all__ = ["BOUNCE_COLUMNS", "BounceImport", "read_bounce_report"]

BOUNCE_COLUMNS = (
    "source",
    "recipient",
    "action",
    "status",
    "diagnostic",
    "message_id",
    "verp_recipient",
    "hard",
    "kind",
)


@dataclass(slots=True)
class BounceImport:
    """What a bounce report holds for a suppression list."""

    entries: list[Suppression] = field(default_factory=list)
    hard: int = 0
    complaints: int = 0
    skipped: int = 0


def _reason(row: dict[str, str]) -> str | None:
    if row["kind"].strip().lower() == "arf" or row["action"].strip().lower() == "complained":
        return "complaint"
    if row["hard"].strip().lower() == "true":
        return "hard-bounce"
    return None


def read_bounce_report(path: Path) -> BounceImport:
    """The hard bounces and complaints of a bounce report.

    Raises:
        ConfigError: Not such a report (its header), or a row without a usable address;
            the line is named.
    """
    found = BounceImport()
    now = datetime.now(UTC)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = tuple(reader.fieldnames or ())
        if not set(BOUNCE_COLUMNS) <= set(header):
            raise ConfigError(
                f"{path} line 1: not a bounce report of 'asyncmail bounces --report': "
                f"the header must have {','.join(BOUNCE_COLUMNS)}"
            )
        for row in reader:
            values = {k: (row.get(k) or "") for k in BOUNCE_COLUMNS}
            reason = _reason(values)
            if reason is None:
                found.skipped += 1
                continue
            address = values["verp_recipient"].strip() or values["recipient"].strip()
            try:
                entry = Suppression(
                    address=address,
                    reason=reason,
                    status=values["status"].strip(),
                    diagnostic=values["diagnostic"],
                    added_at=now,
                    source=f"bounces:{values['source']}" if values["source"] else "bounces",
                )
            except ConfigError as exc:
                raise ConfigError(f"{path} line {reader.line_num}: {exc}") from None
            found.entries.append(entry)
            if reason == "hard-bounce":
                found.hard += 1
            else:
                found.complaints += 1
        return found
