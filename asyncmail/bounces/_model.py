"""What a bounce says: a ``Bounce`` with one ``BouncedRecipient`` per address it is about."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["ACTIONS", "Bounce", "BouncedRecipient", "Kind", "is_address_gone"]

#: ``kind`` of a bounce: an RFC 3464 delivery status notification, an RFC 5965 feedback
#: (complaint) report, or a provider's plain-text notice read by its known wording.
Kind = Literal["dsn", "arf", "text"]

#: The RFC 3464 actions, and ``complained`` for a feedback report.
ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded", "complained"})

# Status subjects (RFC 3463) that say the address itself is gone: 5.1.x addressing
# (bad mailbox 5.1.1, bad domain 5.1.2, bad syntax 5.1.3, moved 5.1.6, null MX 5.1.10) and
# 5.2.1 mailbox disabled. Not 5.2.2 (full), 5.2.3 (too big), 5.3.x/5.4.x (the receiving
# system or the route), 5.5.x (protocol), 5.6.x (content) nor 5.7.x (policy, spam, DMARC):
# those say something about this message or this sender, not that the address is dead.
_GONE_STATUS = re.compile(r"5\.1\.\d{1,3}|5\.2\.1")
# The words receivers use for "no such mailbox" when their status code is only the class.
UNKNOWN_USER = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient)|"
    r"(?:mailbox|user|account|address|recipient)\s+(?:\S+\s+)?(?:does not|doesn'?t) exist|"
    r"(?:mailbox|user|recipient|address) (?:is )?not found|invalid (?:recipient|mailbox|user)|"
    r"mailbox unavailable|doesn'?t have an? \S+ account|no mailbox here|not a valid mailbox|"
    r"user not exist|recipient not exist|收件人不存在|该用户不存在|用户不存在|地址不存在",
    re.IGNORECASE,
)


def is_address_gone(status: str, diagnostic: str) -> bool:
    """Whether a permanent failure says the address does not exist (see ``hard``)."""
    if _GONE_STATUS.fullmatch(status):
        return True
    return status == "5.0.0" and UNKNOWN_USER.search(diagnostic) is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class BouncedRecipient:
    """One recipient a bounce or complaint is about.

    Attributes:
        original_recipient: The address as the sender gave it (``Original-Recipient``,
            xtext-decoded, without its ``rfc822;`` type), else ``final_recipient``. For a
            complaint: ``Original-Rcpt-To``, else the returned message's single ``To``,
            else the VERP recipient; empty when the provider redacted them all.
        final_recipient: The address the reporting system tried (``Final-Recipient``).
        action: ``failed``, ``delayed``, ``delivered``, ``relayed``, ``expanded`` (RFC 3464)
            or ``complained`` (a feedback report).
        status: The enhanced status code such as ``5.1.1``; when the report gives none, or
            only its class (``5.0.0``), the one its diagnostic text implies (``550 User
            not found`` gives ``5.1.1``). Empty when nothing says (complaints).
        diagnostic: The receiving server's reply or the report's reason, on one line.
        remote_mta: The host that gave the diagnostic, when the report names it.
        verp_recipient: The recipient decoded from the VERP address the bounce came back
            to, when ``parse`` was given the template and the address fits it.
    """

    original_recipient: str
    final_recipient: str
    action: str
    status: str = ""
    diagnostic: str = ""
    remote_mta: str = ""
    verp_recipient: str | None = None

    @property
    def hard(self) -> bool:
        """Whether the address is dead: stop sending to it (what a suppression list wants).

        True for a ``failed`` recipient whose status is 5.1.x (bad mailbox, bad domain, bad
        syntax) or 5.2.1 (mailbox disabled), or 5.0.0 with "user unknown" wording. False for
        a full mailbox (5.2.2), a message too big (5.2.3), policy and spam blocks (5.7.x),
        every 4.x.x delay, and complaints (``action == "complained"``: suppress those too,
        but they are not delivery failures).
        """
        return self.action == "failed" and is_address_gone(self.status, self.diagnostic)

    @property
    def address(self) -> str:
        """The recipient to act on: the VERP-decoded one when known, else the original."""
        return self.verp_recipient or self.original_recipient


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounce:
    """A delivery status notification, feedback report or provider bounce, read.

    Attributes:
        kind: ``dsn`` (RFC 3464), ``arf`` (RFC 5965 complaint) or ``text`` (a provider's
            non-standard notice: qmail, Exim, Yahoo, Exchange, Chinese providers...).
        recipients: One entry per recipient the report is about (at least one).
        reporting_mta: The system that wrote the report (``Reporting-MTA``), if given.
        original_message_id: The ``Message-ID`` of the message that bounced, from the copy
            or headers the bounce returns, else its ``X-Original-Message-ID`` or
            ``In-Reply-To``; None when the bounce carries none.
        envelope_id: ``Original-Envelope-Id`` (the ENVID given at MAIL FROM), xtext-decoded.
    """

    kind: Kind
    recipients: tuple[BouncedRecipient, ...]
    reporting_mta: str = ""
    original_message_id: str | None = None
    envelope_id: str | None = None
