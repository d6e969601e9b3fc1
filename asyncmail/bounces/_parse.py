"""``parse``: one message in, a ``Bounce`` or None out.

The order of the readers is the order of trust: an RFC 3464 report, an RFC 5965 feedback
report, then (only for a message from a mail system, or titled like a bounce) the wording of
plain-text notices, and last the VERP address alone.
"""

from __future__ import annotations

import dataclasses
import email
import re
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses

from ..message._verp import check_template, decode
from ._dsn3464 import Report, read_arf, read_dsn
from ._heuristics import read_text, split_copy
from ._model import Bounce, BouncedRecipient, Kind
from ._text import MAX_TEXT, body_text, header, one_line, parts, payload

__all__ = ["parse"]

# A message written by a mail system, not a person, by its From. (A null Return-Path is no
# sign: RFC 3834 auto-replies are sent with one too.)
_SYSTEM_SENDER = re.compile(
    r"mailer[-_ ]?daemon|postmaster|mail ?delivery ?(?:subsystem|system|service)|"
    r"mail ?administrator|microsoftexchange",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status notification|failure|has failed|failed|problem)|"
    r"returned mail|mail delivery failed|failure notice|could not be delivered|"
    r"non[- ]?delivery|delivery notification|退信|无法投递|投递失败|发送失败",
    re.IGNORECASE,
)
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(?:out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?reply|auto:|"
    r"abwesenheit|réponse automatique|自动回复)",
    re.IGNORECASE,
)
_MESSAGE_ID = re.compile(r"^Message-ID:[ \t]*(<[^>\r\n]{1,998}>)", re.IGNORECASE | re.MULTILINE)
_ANGLE_ID = re.compile(r"<[^<>\s]{1,998}>")
# Where a bounce names the address it came back to: the VERP address.
_VERP_HEADERS = (
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "To",
    "Return-Path",
)
_RETURNED = frozenset({"message/rfc822", "message/global"})


def parse(data: bytes | Message, *, verp: str | None = None) -> Bounce | None:
    """Read a bounce: what happened to which recipient of which message.

    Reads RFC 3464 delivery status notifications (Postfix, Gmail, Exchange/Outlook.com,
    Amazon SES...), RFC 5965 feedback reports (spam complaints, ``action="complained"``)
    and the plain-text notices of qmail, older Exim, Yahoo, Exchange and Chinese providers.

    Not a bounce, so None: an ordinary message, an auto-reply or out-of-office notice
    (``Auto-Submitted: auto-replied`` or its usual subjects, from a person rather than a
    mail system), a ``not-spam`` feedback report, and anything unreadable. Malformed input
    never raises: it gives None or what could be read.

    Args:
        data: The raw message (a Maildir file, one mbox entry), or a parsed stdlib message.
        verp: The VERP template the messages were sent with, such as
            ``"bounces+{local}={domain}@example.com"``: the recipient is then also decoded
            from the address the bounce came back to (``verp_recipient``), and a bounce
            whose text names no recipient is still recognised by that address alone.

    Raises:
        TypeError: ``data`` is neither bytes nor an ``email.message.Message``.
        MessageError: ``verp`` is not a VERP template.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        message = _read(bytes(data))
    elif isinstance(data, Message):
        message = data
    else:
        raise TypeError(f"parse() takes bytes or an email.message.Message, not {type(data)!r}")
    if verp is not None:
        check_template(verp, "verp")
    if message is None:
        return None
    verp_recipient = _verp_recipient(message, verp) if verp else None
    kind: Kind = "dsn"
    report = read_dsn(message)
    if report is None:
        kind, report = "arf", read_arf(message)
    text = ""
    if report is None:
        if not _from_mail_system(message) and (
            _is_auto_reply(message) or not _BOUNCE_SUBJECT.search(header(message, "Subject"))
        ):
            return None
        kind, text = "text", _text(message)
        recipients, mta = read_text(split_copy(text)[0])
        if not recipients and verp_recipient:
            recipients = [
                BouncedRecipient(original_recipient="", final_recipient="", action="failed")
            ]
        if not recipients:
            return None
        report = Report(tuple(recipients), mta)
    return Bounce(
        kind=kind,
        recipients=_with_verp(report.recipients, verp_recipient),
        reporting_mta=report.reporting_mta,
        original_message_id=_original_message_id(message, text),
        envelope_id=report.envelope_id,
    )


def _read(data: bytes) -> Message | None:
    try:
        return email.message_from_bytes(data, policy=compat32)
    except (ValueError, LookupError, TypeError, IndexError, AttributeError, AssertionError):
        return None  # the stdlib parser is lenient; this guards its rare internal errors


def _with_verp(
    recipients: tuple[BouncedRecipient, ...], verp_recipient: str | None
) -> tuple[BouncedRecipient, ...]:
    """The VERP recipient on the report's only recipient, or on the one it names.

    A VERP message has one recipient, so a report about several came from elsewhere: the
    decoded address then goes only on a recipient with that very address.
    """
    if verp_recipient is None:
        return recipients
    single = len(recipients) == 1
    return tuple(
        dataclasses.replace(
            recipient,
            original_recipient=recipient.original_recipient or verp_recipient,
            final_recipient=recipient.final_recipient or verp_recipient,
            verp_recipient=verp_recipient,
        )
        if single
        or verp_recipient.lower()
        in (
            recipient.original_recipient.lower(),
            recipient.final_recipient.lower(),
        )
        else recipient
        for recipient in recipients
    )


def _from_mail_system(message: Message) -> bool:
    return any(
        _SYSTEM_SENDER.search(header(message, name)) for name in ("From", "Return-Path", "Sender")
    )


def _is_auto_reply(message: Message) -> bool:
    auto = one_line(header(message, "Auto-Submitted")).lower()
    return (
        (bool(auto) and auto != "no")
        or "X-Autoreply" in message
        or "X-Autorespond" in message
        or one_line(header(message, "Precedence")).lower() == "auto_reply"
        or _AUTO_REPLY_SUBJECT.search(header(message, "Subject")) is not None
    )


def _text(message: Message) -> str:
    """The readable text of a message (its text/plain parts, else its HTML), capped."""
    for subtype in ("plain", "html"):
        texts, size = [], 0
        for part in parts(message):
            if part.get_content_type() == f"text/{subtype}" and size < MAX_TEXT:
                texts.append(body_text(part))
                size += len(texts[-1])
        if texts:
            return "\n\n".join(texts)[:MAX_TEXT]
    return ""


def _verp_recipient(message: Message, template: str) -> str | None:
    sources = [message, *_returned(message)]
    for source in sources:
        names = _VERP_HEADERS if source is message else ("Return-Path",)
        for name in names:
            values = [str(v) for v in source.get_all(name) or ()]
            for _, address in getaddresses(values):
                decoded = decode(template, address) if address else None
                if decoded is not None:
                    return decoded
    return None


def _returned(message: Message) -> list[Message]:
    """The returned original: its full copy, or just its headers."""
    found = []
    for part in parts(message):
        content_type = part.get_content_type()
        if content_type in _RETURNED:
            content = payload(part)
            if isinstance(content, list):
                found += [p for p in content[:1] if isinstance(p, Message)]
        elif content_type == "text/rfc822-headers":
            found.append(HeaderParser(policy=compat32).parsestr(body_text(part)))
    return found


def _original_message_id(message: Message, text: str) -> str | None:
    for returned in _returned(message):
        found = _ANGLE_ID.search(header(returned, "Message-ID"))
        if found:
            return found.group(0)
    copy = split_copy(text)[1] if text else ""
    in_copy = _MESSAGE_ID.search(copy)
    if in_copy:
        return in_copy.group(1)
    for name in ("X-Original-Message-ID", "In-Reply-To"):
        found = _ANGLE_ID.search(header(message, name))
        if found:
            return found.group(0)
    return None
