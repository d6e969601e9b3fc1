"""``send -v``: the SMTP conversation on stderr, as ``C: EHLO ...`` and ``S: 250 ...`` lines.

The lines come from the SMTP layer's tap (``asyncmail.smtp._tap``), which already leaves out
AUTH's arguments (``AUTH PLAIN ****``) and the message content (a byte count instead).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console

from ..smtp._tap import TAP

__all__ = ["transcript"]


@contextlib.contextmanager
def transcript(console: Console) -> Iterator[None]:
    """Print the conversation of every connection opened inside the block."""

    def show(who: str, line: str) -> None:
        console.print(f"{who}: {line}", markup=False, soft_wrap=True)

    token = TAP.set(show)
    try:
        yield
    finally:
        TAP.reset(token)
