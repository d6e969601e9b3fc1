"""A message as the outbox stores it: bytes that any worker, on any machine, turns back into it.

An asyncmail ``Message`` is kept as JSON of its fields (attachments in base64), so a worker
renders it for its server exactly as ``send()`` would, with the Message-ID and Date fixed
at enqueue time. A stdlib ``EmailMessage`` is kept as its bytes, with a Message-ID added
when it had none. Never pickle: a store shared by many machines must not be able to run
code in a worker.
"""

from __future__ import annotations

import base64
import email
import email.message
import json
from datetime import datetime
from email import policy as email_policy
from typing import Any

from .._exceptions import MessageError
from ..message._address import Address
from ..message._message import Attachment, Message

__all__ = ["FORMAT", "decode", "encode"]

#: The payload format; a worker refuses a payload of a format it does not know.
FORMAT = 1


def _addr(address: Address) -> list[str]:
    return [address.name, address.addr]


def _addrs(addresses: tuple[Address, ...]) -> list[list[str]]:
    return [_addr(a) for a in addresses]


def encode(message: Message | email.message.Message, *, message_id: str) -> bytes:
    """The stored form of ``message``; ``message_id`` is the one every attempt carries."""
    if isinstance(message, Message):
        fields: dict[str, Any] = {
            "v": FORMAT,
            "kind": "message",
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
        }
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    raw = message.as_bytes(policy=email_policy.SMTPUTF8.clone(linesep="\r\n"))
    head = json.dumps({"v": FORMAT, "kind": "email", "message_id": message_id}).encode()
    return head + b"\n" + raw


def decode(payload: bytes) -> Message | email.message.EmailMessage:
    """The message ``encode`` stored.

    Raises:
        MessageError: The payload is not one this version of asyncmail wrote.
    """
    head, sep, raw = payload.partition(b"\n")
    try:
        fields = json.loads(head if sep else payload)
        if not isinstance(fields, dict) or fields.get("v") != FORMAT:
            raise ValueError("unknown payload format")
        if fields["kind"] == "email":
            parsed = email.message_from_bytes(raw, policy=email_policy.default)
            assert isinstance(parsed, email.message.EmailMessage)
            if parsed.get("Message-ID") is None:
                parsed["Message-ID"] = fields["message_id"]
            return parsed
        return Message(
            sender=tuple(fields["sender"]),
            to=[tuple(a) for a in fields["to"]],
            cc=[tuple(a) for a in fields["cc"]],
            bcc=[tuple(a) for a in fields["bcc"]],
            reply_to=[tuple(a) for a in fields["reply_to"]],
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
        )
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise MessageError(f"a stored message cannot be read back: {exc}") from exc
