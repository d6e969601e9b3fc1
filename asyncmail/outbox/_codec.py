"""A message as the outbox stores it: bytes that any worker, on any machine, sends as they are.

A payload holds a short JSON head (the envelope, the Message-ID, and how the content was
rendered), the content exactly as it goes after DATA (rendered and dot-stuffed once, at
enqueue time, for a server with 8BITMIME), and the message itself: an asyncmail
``Message`` as JSON of its fields (attachments in base64), a stdlib ``EmailMessage`` or a
``RawMessage`` as its bytes (a raw one's envelope is the head's). A worker sends the stored
content without parsing the message; only a server without 8BITMIME makes it read the
message back and render it again, with the same Message-ID and Date (a ``RawMessage``
cannot be: it ends FAILED there). Never pickle: a store shared by many machines must not be
able to run code in a worker.

The head of a VERP or DSN message also holds the VERP flag and the DSN request, and says
format 2, so that a worker of an older asyncmail (format 1 only) refuses it instead of
sending the VERP template as the sender. A message without a ``dsn`` of its own (a stdlib
message never has one) stores none: the worker's Mailer applies its own ``dsn``.
"""

from __future__ import annotations

import base64
import email
import email.message
import json
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from typing import Any

from .._exceptions import MessageError
from ..message._address import Address
from ..message._content import WireContent
from ..message._dsn import DSN
from ..message._envelope import Envelope
from ..message._message import Attachment, Message
from ..message._raw import RawMessage

__all__ = ["FORMAT", "Stored", "encode", "read"]

#: The payload format; a worker refuses a payload of a format it does not know.
FORMAT = 1
#: The format of a payload with VERP or DSN (format 1 and two more head fields).
FORMAT_DSN = 2


def _addr(address: Address) -> list[str]:
    return [address.name, address.addr]


def _addrs(addresses: tuple[Address, ...]) -> list[list[str]]:
    return [_addr(a) for a in addresses]


def _fields(message: Message) -> dict[str, Any]:
    return {
        "sender": _addr(message.sender),
        "to": _addrs(message.to),
        "cc": _addrs(message.cc),
        "bcc": _addrs(message.bcc),
        "reply_to": _addrs(message.reply_to),
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
        "attachments": [
            {
                "filename": a.filename,
                "content": base64.b64encode(a.content).decode("ascii"),
                "content_type": a.content_type,
                "inline": a.inline,
                "content_id": a.content_id,
            }
            for a in message.attachments
        ],
        "headers": [list(h) for h in message.headers],
        "return_path": message.return_path,
        "message_id": message.message_id,
        "date": message.date.isoformat(),
        "dsn": _dsn(message.dsn),
        "unsubscribe": message.unsubscribe,
        "unsubscribe_mailto": message.unsubscribe_mailto,
        "list_id": message.list_id,
    }


def _dsn(dsn: DSN | None) -> dict[str, Any] | None:
    if dsn is None:
        return None
    return {
        "notify": list(dsn.notify),
        "ret": dsn.ret,
        "envid": dsn.envid,
        "orcpt": dsn.orcpt,
        "required": dsn.required,
    }


def _dsn_of(fields: dict[str, Any] | None) -> DSN | None:
    return None if fields is None else DSN(**fields)


def encode(
    message: Message | RawMessage | email.message.Message,
    envelope: Envelope,
    content: WireContent,
) -> bytes:
    """The stored form of ``message``, with its envelope and its content for the wire."""
    if isinstance(message, Message):
        kind = "message"
        body = json.dumps(_fields(message), ensure_ascii=False, separators=(",", ":")).encode()
    elif isinstance(message, RawMessage):
        kind = "raw"
        body = message.data
    else:
        kind = "email"
        # (Message's own as_bytes: a subclass may override it without a policy argument)
        policy = email_policy.SMTPUTF8.clone(linesep="\r\n")
        body = email.message.Message.as_bytes(message, policy=policy)
    head = {
        "v": FORMAT,
        "kind": kind,
        "message_id": envelope.message_id,
        "sender": envelope.sender,
        "recipients": list(envelope.recipients),
        "needs_smtputf8": envelope.needs_smtputf8,
        "wire": [len(content.data), content.size, content.eight_bit, content.smtputf8],
    }
    if envelope.wants_smtputf8:
        head["wants_smtputf8"] = True
    if envelope.verp or envelope.dsn is not None:
        head.update(v=FORMAT_DSN, verp=envelope.verp, dsn=_dsn(envelope.dsn))
    line = json.dumps(head, ensure_ascii=False, separators=(",", ":")).encode()
    return b"".join([line, b"\n", content.data, body])


@dataclass(frozen=True, slots=True)
class Stored:
    """A payload read without parsing its message: what a worker needs to send it."""

    envelope: Envelope
    content: WireContent
    """Rendered for a server with 8BITMIME, in the envelope's SMTPUTF8 mode."""
    kind: str
    body: bytes

    def message(self) -> Message | RawMessage | email.message.EmailMessage:
        """The message itself, read back (for a server that needs another rendering).

        Raises:
            MessageError: The stored message cannot be read back.
        """
        try:
            if self.kind == "email":
                parsed = email.message_from_bytes(self.body, policy=email_policy.default)
                assert isinstance(parsed, email.message.EmailMessage)
                if parsed.get("Message-ID") is None and self.envelope.message_id:
                    parsed["Message-ID"] = self.envelope.message_id
                return parsed
            if self.kind == "raw":
                envelope = self.envelope
                return RawMessage(
                    self.body,
                    sender=envelope.sender,
                    recipients=envelope.recipients,
                    dsn=envelope.dsn,
                )
            return _message(json.loads(self.body))
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            raise MessageError(f"a stored message cannot be read back: {exc}") from exc


def read(payload: bytes) -> Stored:
    """The envelope and wire content of a payload; the message stays unparsed.

    Raises:
        MessageError: The payload is not one this version of asyncmail wrote.
    """
    line, _, rest = payload.partition(b"\n")
    try:
        head = json.loads(line)
        if not isinstance(head, dict) or head.get("v") not in (FORMAT, FORMAT_DSN):
            raise ValueError("unknown payload format")
        length, size, eight_bit, smtputf8 = head["wire"]
        envelope = Envelope(
            head["sender"],
            tuple(head["recipients"]),
            head["message_id"],
            head["needs_smtputf8"],
            bool(head.get("verp", False)),
            _dsn_of(head.get("dsn")),
            bool(head.get("wants_smtputf8", False)),
        )
        content = WireContent(rest[:length], size, bool(eight_bit), bool(smtputf8))
        return Stored(envelope, content, head["kind"], rest[length:])
    except (ValueError, KeyError, TypeError) as exc:
        raise MessageError(f"a stored message cannot be read back: {exc}") from exc


def _message(fields: dict[str, Any]) -> Message:
    return Message(
        sender=Address(*fields["sender"]),
        to=[Address(*a) for a in fields["to"]],
        cc=[Address(*a) for a in fields["cc"]],
        bcc=[Address(*a) for a in fields["bcc"]],
        reply_to=[Address(*a) for a in fields["reply_to"]],
        subject=fields["subject"],
        text=fields["text"],
        html=fields["html"],
        attachments=[
            Attachment(
                filename=a["filename"],
                content=base64.b64decode(a["content"]),
                content_type=a["content_type"],
                inline=a["inline"],
                content_id=a["content_id"],
            )
            for a in fields["attachments"]
        ],
        headers=[tuple(h) for h in fields["headers"]],
        return_path=fields["return_path"],
        message_id=fields["message_id"],
        date=datetime.fromisoformat(fields["date"]),
        dsn=_dsn_of(fields.get("dsn")),
        unsubscribe=fields.get("unsubscribe"),  # (absent from payloads of older versions)
        unsubscribe_mailto=fields.get("unsubscribe_mailto"),
        list_id=fields.get("list_id"),
    )
