"""Whether a refusal says "you are sending too fast": a pure classifier with a table of texts.

Big providers answer a client that goes too fast with a 4xx whose text says so; a plain
4xx ("451 4.3.0 temporary local problem", "421 Service not available") says nothing of the
kind. ``says_too_fast(code, text)`` tells them apart, so the engine can slow that relay
down (``asyncmail.engine._adaptive``) instead of retrying at full speed into the wall.

Only 4xx replies count: a 5xx ends the message and is no pacing advice. Per-recipient
limits are not the client's rate either (Gmail's 450 4.2.1 "the user you are trying to
contact is receiving mail at a rate that prevents additional messages": slowing down
everything for one busy mailbox would be wrong), nor are per-connection limits (Yahoo's
"421 Max message per connection reached" asks for a new connection, not a lower rate), nor
NetEase's "RP:CEL" (too many erroneous commands).

Sources for the texts (the pages quote the providers' replies verbatim):

- Gmail 421-4.7.28 / 421-4.7.0 "Our system has detected an unusual rate of unsolicited mail
  originating from your IP address ... temporarily rate limited":
  https://talk.plesk.com/threads/421-4-7-28-error-when-sending-mail-to-google-server.361840/,
  https://mail-archive.com/mailop@mailop.org/msg20199.html,
  https://mythicintel.com/blog/421-from-gmail
- Microsoft 365 "451 4.7.500 Server busy. Please try again later from [x]. (S77714)" and
  "4.7.650 The mail server [x] has been temporarily rate limited due to IP reputation":
  https://www.suped.com/knowledge/email-deliverability/troubleshooting/what-causes-office365-temp-fails-and-how-can-they-be-resolved,
  https://helpdesk.spamtitan.com/support/solutions/articles/4000094185
- Yahoo "421 4.7.0 [TSS04] Messages from x temporarily deferred due to unexpected volume or
  user complaints": https://support.cpanel.net/hc/en-us/articles/4403952239511,
  https://smtpfieldmanual.com/provider/yahoo/421/4.7.0
- QQ "Ip / Connection / Domain / Sender frequency limited": https://smtp.codes/qq.
  QQ usually sends these as 550; a 5xx is a permanent refusal here, so only a 4xx with
  that text slows the relay down.
- NetEase (163/126) "421 HL:IFC" (too much mail from the IP in a short time), "421 HL:ICC"
  (too many concurrent connections), "451 MI:SFQ" (sender over its 15-minute quota):
  https://biecuoliao.com/pa/MBRrwEM.html (a copy of NetEase's bounce-code table).
- Amazon SES "454 Throttling failure: Maximum sending rate exceeded":
  https://docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html
- Postfix and most MTAs: "421 4.7.0 ... Error: too many connections from x".
"""

from __future__ import annotations

import re

__all__ = ["THROTTLE_SIGNS", "says_too_fast"]

#: (provider, a case-insensitive regular expression its "too fast" reply text matches).
THROTTLE_SIGNS: tuple[tuple[str, str], ...] = (
    ("Gmail", r"unusual rate of\s+(?:\d{3}[- ]4\.7\.\d+\s+)?unsolicited"),
    ("Gmail, Microsoft 365", r"\brate[- ]limit"),
    ("Microsoft 365", r"\bserver busy\b"),
    ("Yahoo", r"deferred due to unexpected volume"),
    ("QQ", r"\bfrequency limited\b"),
    ("NetEase", r"\b(?:HL:IFC|HL:ICC|MI:SFQ)\b"),
    ("Amazon SES", r"\bthrottling failure\b|\bmaximum sending rate exceeded\b"),
    ("Postfix, Exim and others", r"\btoo many (?:concurrent )?connections\b"),
    ("generic", r"\b(?:sending|sent) too (?:fast|quickly|many messages too fast)\b"),
)

#: Enhanced status codes that mean "rate limited" whatever the text says.
THROTTLE_CODES = frozenset({"4.7.28"})

_SIGNS = re.compile("|".join(f"(?:{pattern})" for _, pattern in THROTTLE_SIGNS), re.IGNORECASE)
_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")


def says_too_fast(code: int | None, text: str) -> bool:
    """True when a reply asks the client to slow down (a 4xx with a rate-limit text).

    Args:
        code: The reply code (None when there was no reply: never a throttle).
        text: The reply text, lines joined with any separator.
    """
    if code is None or not 400 <= code < 500:
        return False
    match = _ENHANCED.match(text)
    if match is not None and match.group(1) in THROTTLE_CODES:
        return True
    return _SIGNS.search(text) is not None
