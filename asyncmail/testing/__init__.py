"""Test tools for code that sends mail: in-process outboxes, a real capture server, faults,
pytest fixtures.

``outbox`` is where every ``Mailer("memory://")`` of this process puts its messages (a
``MailOutbox`` of ``SentMessage``, like Django's ``mail.outbox``); clear it between tests
(the pytest plugin does). ``CaptureServer`` speaks real SMTP on 127.0.0.1 (port 0) with
optional TLS, AUTH and injected ``Fault``s, and records every ``CapturedMessage`` and
``Session``. Importing this package needs nothing beyond asyncmail; starting a server needs
the extra: ``pip install 'asyncmail[testing]'``. The pytest plugin (fixtures ``mail_server``,
``mail_outbox``, ``memory_outbox``; marker ``mail_server``) is registered automatically.
"""

from ..engine._mail_outbox import MEMORY_OUTBOX
from ..engine._mail_outbox import MailOutbox as MailOutbox
from ..message._parsed import ParsedAttachment as ParsedAttachment
from ..message._parsed import SentMessage as SentMessage
from ._faults import Fault as Fault
from ._proxy import LatencyProxy as LatencyProxy
from ._records import CapturedMessage as CapturedMessage
from ._records import Session as Session
from ._server import CaptureServer as CaptureServer
from ._server import CaptureStatistics as CaptureStatistics
from ._thread import ServerThread as ServerThread

#: The messages every ``Mailer("memory://")`` of this process sent, in order (a live list).
outbox: MailOutbox[SentMessage] = MEMORY_OUTBOX

__all__ = (
    "CaptureServer",
    "CaptureStatistics",
    "CapturedMessage",
    "Fault",
    "LatencyProxy",
    "MailOutbox",
    "ParsedAttachment",
    "SentMessage",
    "ServerThread",
    "Session",
    "outbox",
)

# Public classes report this package as their home, so reprs and docs read "asyncmail.testing.X".
for _name in __all__:
    if isinstance(globals()[_name], type):
        globals()[_name].__module__ = __name__
del _name
