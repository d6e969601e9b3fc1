"""Test tools for code that sends mail: a real capture server, faults, pytest fixtures.

``CaptureServer`` speaks real SMTP on 127.0.0.1 (port 0) with optional TLS, AUTH and injected
``Fault``s, and records every ``CapturedMessage`` and ``Session``. Importing this package needs
nothing beyond asyncmail; starting a server needs the extra: ``pip install 'asyncmail[testing]'``.
The pytest plugin (fixtures ``mail_server``, ``mail_outbox``; marker ``mail_server``) is
registered automatically.
"""

from ._faults import Fault as Fault
from ._proxy import LatencyProxy as LatencyProxy
from ._records import CapturedMessage as CapturedMessage
from ._records import Session as Session
from ._server import CaptureServer as CaptureServer
from ._server import CaptureStatistics as CaptureStatistics
from ._thread import ServerThread as ServerThread

__all__ = (
    "CaptureServer",
    "CaptureStatistics",
    "CapturedMessage",
    "Fault",
    "LatencyProxy",
    "ServerThread",
    "Session",
)

# Public objects report this package as their home, so reprs and docs read "asyncmail.testing.X".
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
