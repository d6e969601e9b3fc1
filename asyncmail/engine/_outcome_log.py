"""One WARNING line (logger ``asyncmail.outcomes``) for each message that did not fully arrive.

A DEBUG log says what happened on the wire; this is the line an operator greps for: which
message, which recipients, and what the server said (code, enhanced code, text), whether the
whole message failed, ended unknown, or lost some of its recipients.
"""

from __future__ import annotations

import logging
from typing import Any

from .._exceptions import MailError, SendResult, Status

__all__ = ["log_outcome"]

logger = logging.getLogger("asyncmail.outcomes")


def log_outcome(result: SendResult[Any]) -> None:
    """Log ``result`` at WARNING unless every recipient accepted the message."""
    if result.status is Status.DELIVERED and not result.refused:
        return
    if not logger.isEnabledFor(logging.WARNING):
        return
    mid = result.message_id or "(no Message-ID)"
    refused = _grouped(result)
    if result.status is Status.DELIVERED:
        accepted = ", ".join(result.accepted)
        logger.warning("message %s delivered to %s; refused for %s", mid, accepted, refused)
    elif result.status is Status.UNKNOWN:
        unknown = ", ".join(result.unknown)
        said = _said(result.error) if result.error is not None else "no reply to the content"
        more = f"; refused for {refused}" if refused else ""
        logger.warning("message %s: outcome unknown for %s: %s%s", mid, unknown, said, more)
    elif refused:
        logger.warning("message %s failed for %s", mid, refused)
    else:
        said = _said(result.error) if result.error is not None else "no reason given"
        logger.warning("message %s failed: %s", mid, said)


def _grouped(result: SendResult[Any]) -> str:
    """The refused recipients, those refused with the same words together."""
    groups: dict[str, list[str]] = {}
    for rcpt, error in result.refused.items():
        groups.setdefault(_said(error), []).append(rcpt)
    return "; ".join(f"{', '.join(rcpts)}: {said}" for said, rcpts in groups.items())


def _said(error: MailError) -> str:
    """The code, the enhanced code and the text of ``error``, or its words without a code."""
    code = getattr(error, "code", None)
    text = getattr(error, "text", None) or str(error)
    phase = getattr(error, "phase", None)
    where = f" (at {phase.value})" if phase is not None else ""
    if code is None:
        return f"{text}{where}"
    enhanced = getattr(error, "enhanced_code", None)
    if enhanced and not text.startswith(enhanced):
        return f"{code} {enhanced} {text}{where}"
    return f"{code} {text}{where}"
