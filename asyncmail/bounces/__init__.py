"""Read bounces: RFC 3464 delivery status notifications, RFC 5965 complaints, and the
plain-text notices of the big mail systems.

``parse(raw_bytes)`` gives a ``Bounce`` (or None for a message that is not one), with a
``BouncedRecipient`` per address: action, status code, diagnostic, and ``hard`` for "this
address is dead". ``asyncmail bounces MAILDIR|MBOX --report bounces.csv`` does the same for a
mailbox. ``verp_decode(template, address)`` gives back the recipient a VERP address was made
for (None when the address does not fit the template).
"""

from ..message._verp import decode as verp_decode
from ._model import Bounce as Bounce
from ._model import BouncedRecipient as BouncedRecipient
from ._parse import parse as parse

__all__ = ["Bounce", "BouncedRecipient", "parse", "verp_decode"]
