"""The live counts of one batch run, read by the progress display and the summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["Counts"]


@dataclass(slots=True)
class Counts:
    """Live counts of one run, read by the progress display."""

    total: int = 0
    delivered: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    suppressed: int = 0
    """Rows not sent: their address is on the suppression list."""
    bounced: int = 0
    """Addresses this run added to the suppression list (5.1.x refusals)."""
    duplicates: int = 0
    """Rows not sent: a later row of an address (``--dedupe``)."""
    in_flight: int = 0
    started_at: float = field(default_factory=time.monotonic)
    interrupted: bool = False
    gave_up: str | None = None
    report_counts: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> int:
        """Rows finished in this run, skipped and suppressed ones included."""
        sent = self.delivered + self.failed + self.unknown
        return sent + self.skipped + self.suppressed + self.duplicates

    @property
    def rate(self) -> float:
        """Messages finished per second in this run."""
        elapsed = time.monotonic() - self.started_at
        sent = self.delivered + self.failed + self.unknown
        return sent / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until the end at the current rate, if it can be told."""
        rate = self.rate
        left = max(0, self.total - self.done)
        return left / rate if rate > 0 else None
