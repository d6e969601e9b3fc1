"""A sent message read back: its envelope, its bytes, and what a test wants to check in them.

``ParsedMail`` is the part shared by every record of a sent message (a memory:// outbox's
``SentMessage``, a capture server's ``CapturedMessage``): from ``envelope_sender``,
``recipients`` and ``data`` it reads the subject, bodies, addresses and attachments,
parsing the bytes once, on first use, with ``email.policy.default`` (so encoded words and
UTF-8 headers read back as ``str``).
"""

from __future__ import annotations

import email
from dataclasses import dataclass, field
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, Message

__all__ = ["ParsedAttachment", "ParsedMail", "SentMessage"]


@dataclass(frozen=True, slots=True)
class ParsedAttachment:
    """One attachment of a sent message.

    Attributes:
        filename: The file name it carries, if any.
        content_type: Its MIME type, such as ``"application/pdf"``.
        content: Its bytes, decoded from the transfer encoding.
        inline: It is shown inside the message (``Content-Disposition: inline``).
    """

    filename: str | None
    content_type: str
    content: bytes
    inline: bool = False


class ParsedMail:
    """Read-only views of a sent message's content, parsed lazily and once.

    A class using it has the attributes ``envelope_sender``, ``recipients`` and ``data``,
    and a slot ``_email`` for the parsed message.
    """

    __slots__ = ()

    envelope_sender: str
    recipients: tuple[str, ...]
    data: bytes
    _email: EmailMessage | None

    @property
    def parsed(self) -> EmailMessage:
        """The content parsed with the modern ``email.policy.default`` (made once), its
        CRLF line ends read as ``"\\n"``."""
        parsed = self._email
        if parsed is None:
            # (line ends as a mail reader has them: bodies read back with "\n", as written)
            made = email.message_from_bytes(
                self.data.replace(b"\r\n", b"\n"), policy=policy.default
            )
            assert isinstance(made, EmailMessage)
            object.__setattr__(self, "_email", made)
            parsed = made
        return parsed

    @property
    def headers(self) -> EmailMessage:
        """The parsed message, for its headers: ``headers["X-Tag"]`` (any case),
        ``headers.get_all("Received")``."""
        return self.parsed

    @property
    def subject(self) -> str:
        """The Subject, decoded; ``""`` when there is none."""
        return _header(self.parsed, "Subject") or ""

    @property
    def message_id(self) -> str | None:
        """The Message-ID header value, as ``SendResult.message_id`` has it."""
        return _header(self.parsed, "Message-ID")

    @property
    def from_(self) -> str:
        """The address in From (its addr-spec); ``""`` when there is none."""
        found = _addresses(self.parsed, "From")
        return found[0] if found else ""

    @property
    def sender(self) -> str:
        """The same as ``from_``: who the message says it is from."""
        return self.from_

    @property
    def to(self) -> tuple[str, ...]:
        """The addresses in To (addr-specs, no display names)."""
        return _addresses(self.parsed, "To")

    @property
    def cc(self) -> tuple[str, ...]:
        """The addresses in Cc."""
        return _addresses(self.parsed, "Cc")

    @property
    def bcc(self) -> tuple[str, ...]:
        """The envelope recipients named in no To or Cc header (Bcc is not in the bytes)."""
        shown = {a.lower() for a in (*self.to, *self.cc)}
        return tuple(r for r in self.recipients if r.lower() not in shown)

    @property
    def reply_to(self) -> tuple[str, ...]:
        """The addresses in Reply-To."""
        return _addresses(self.parsed, "Reply-To")

    @property
    def text(self) -> str | None:
        """The plain-text body, decoded, with ``"\\n"`` line ends; None when there is none."""
        return _body(self.parsed, "plain")

    @property
    def html(self) -> str | None:
        """The HTML body, decoded, with ``"\\n"`` line ends; None when there is none."""
        return _body(self.parsed, "html")

    @property
    def attachments(self) -> tuple[ParsedAttachment, ...]:
        """The attachments, inline ones included, in order."""
        parsed = self.parsed
        if not parsed.is_multipart():
            return ()
        found = []
        for part in parsed.iter_attachments():
            if part.is_multipart():
                continue
            payload = part.get_payload(decode=True)
            found.append(
                ParsedAttachment(
                    filename=part.get_filename(),
                    content_type=part.get_content_type(),
                    content=payload if isinstance(payload, bytes) else b"",
                    inline=part.get_content_disposition() == "inline",
                )
            )
        return tuple(found)


@dataclass(frozen=True, slots=True, kw_only=True)
class SentMessage(ParsedMail):
    """One message a ``memory://`` Mailer kept (in ``asyncmail.testing.outbox``).

    Attributes:
        envelope_sender: The MAIL FROM address as it would go out (``""`` for ``<>``).
        recipients: Every envelope recipient, Bcc included, in order.
        data: The content as it would go out (CRLF lines, DKIM signatures in front),
            without dot-stuffing.
    """

    envelope_sender: str
    recipients: tuple[str, ...]
    data: bytes
    _email: EmailMessage | None = field(default=None, init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        return summary(self)


def summary(mail: ParsedMail) -> str:
    """One line for a listing: the subject and who it went to."""
    return f"<{type(mail).__name__} {mail.subject!r} to {', '.join(mail.recipients)}>"


def _header(parsed: Message, name: str) -> str | None:
    value = parsed.get(name)
    return None if value is None else str(value).strip()


def _addresses(parsed: EmailMessage, name: str) -> tuple[str, ...]:
    found: list[str] = []
    for value in parsed.get_all(name) or ():
        addresses: tuple[Address, ...] = getattr(value, "addresses", ())
        found += [a.addr_spec for a in addresses]
    return tuple(found)


def _body(parsed: EmailMessage, kind: str) -> str | None:
    part = parsed.get_body(preferencelist=(kind,))
    if part is None or part.get_content_type() != f"text/{kind}":
        return None
    content = part.get_content()  # (base64 text decodes to the CRLF lines it was written in)
    return content.replace("\r\n", "\n") if isinstance(content, str) else None
