"""Read bounces: RFC 3464 delivery status notifications, RFC 5965 complaints, and the
plain-text notices of the big mail systems.

``parse(raw_bytes)`` gives a ``Bounce`` (or None for a message that is not one), with a
``BouncedRecipient`` per address: action, status code, diagnostic, and ``hard`` for "this
address is dead". ``asyncmail bounces MAILDIR|MBOX --report bounces.csv`` does the same for a
mailbox.
"""

from ._model import Bounce as Bounce
from ._model import BouncedRecipient as BouncedRecipient
from ._parse import parse as parse

__all__ = ["Bounce", "BouncedRecipient", "parse"]
