"""asyncmail: send email from async Python, from one password reset to ten million newsletters."""

from ._config import PoolLimits as PoolLimits
from ._config import RetryPolicy as RetryPolicy
from ._config import Server as Server
from ._config import Timeouts as Timeouts
from ._config import TLSMode as TLSMode
from ._exceptions import AuthenticationError as AuthenticationError
from ._exceptions import ConfigError as ConfigError
from ._exceptions import ConnectError as ConnectError
from ._exceptions import DeliveryError as DeliveryError
from ._exceptions import InvalidToken as InvalidToken
from ._exceptions import MailerClosedError as MailerClosedError
from ._exceptions import MailError as MailError
from ._exceptions import MessageError as MessageError
from ._exceptions import NotSupportedError as NotSupportedError
from ._exceptions import OutboxError as OutboxError
from ._exceptions import PermanentError as PermanentError
from ._exceptions import Phase as Phase
from ._exceptions import PoolTimeout as PoolTimeout
from ._exceptions import ProtocolError as ProtocolError
from ._exceptions import Rejected as Rejected
from ._exceptions import Reply as Reply
from ._exceptions import SendResult as SendResult
from ._exceptions import ServerDisconnected as ServerDisconnected
from ._exceptions import ShutdownError as ShutdownError
from ._exceptions import SMTPTimeoutError as SMTPTimeoutError
from ._exceptions import Status as Status
from ._exceptions import TemporaryFailure as TemporaryFailure
from ._exceptions import TLSError as TLSError
from ._exceptions import TransientError as TransientError
from ._exceptions import UnknownOutcomeError as UnknownOutcomeError
from ._exceptions import WrongEventLoopError as WrongEventLoopError
from ._pool import PoolStatistics as PoolStatistics
from .batch._recipients import BadRow as BadRow
from .batch._recipients import Recipient as Recipient
from .batch._recipients import read_recipients as read_recipients
from .batch._template import Template as Template
from .bounces._model import Bounce as Bounce
from .bounces._model import BouncedRecipient as BouncedRecipient
from .dkim._arc import ARC as ARC
from .dkim._signer import DKIM as DKIM
from .engine._mailer import Mailer as Mailer
from .engine._mailer import MailerStatistics as MailerStatistics
from .engine._ratelimit import RateLimit as RateLimit
from .engine._relays import Relay as Relay
from .engine._relays import RelayStatistics as RelayStatistics
from .engine._send_many import ResultStream as ResultStream
from .message._address import Address as Address
from .message._dsn import DSN as DSN
from .message._message import Attachment as Attachment
from .message._message import Message as Message
from .message._raw import RawMessage as RawMessage
from .message._srs import SRS as SRS
from .message._unsubscribe import UnsubscribeRequest as UnsubscribeRequest
from .message._unsubscribe import UnsubscribeTokens as UnsubscribeTokens
from .message._unsubscribe import is_one_click as is_one_click
from .outbox._deliver import Delivery as Delivery
from .outbox._model import OutboxState as OutboxState
from .outbox._model import OutboxStatistics as OutboxStatistics
from .outbox._model import OutboxStatus as OutboxStatus
from .outbox._model import Refusal as Refusal
from .outbox._outbox import Outbox as Outbox
from .suppression._csv import CsvSuppressions as CsvSuppressions
from .suppression._model import Suppression as Suppression
from .suppression._model import Suppressions as Suppressions
from .sync._mailer import SyncMailer as SyncMailer

__version__ = "0.1.0"

__all__ = (  # noqa: RUF022 (plainly sorted: DSN is a class, not a constant)
    "ARC",
    "Address",
    "Attachment",
    "AuthenticationError",
    "BadRow",
    "Bounce",
    "BouncedRecipient",
    "ConfigError",
    "ConnectError",
    "CsvSuppressions",
    "DKIM",
    "DSN",
    "Delivery",
    "DeliveryError",
    "InvalidToken",
    "MailError",
    "Mailer",
    "MailerClosedError",
    "MailerStatistics",
    "Message",
    "MessageError",
    "NotSupportedError",
    "Outbox",
    "OutboxError",
    "OutboxState",
    "OutboxStatistics",
    "OutboxStatus",
    "PermanentError",
    "Phase",
    "PoolLimits",
    "PoolStatistics",
    "PoolTimeout",
    "ProtocolError",
    "RateLimit",
    "RawMessage",
    "Recipient",
    "Refusal",
    "Rejected",
    "Relay",
    "RelayStatistics",
    "Reply",
    "ResultStream",
    "RetryPolicy",
    "SMTPTimeoutError",
    "SRS",
    "SendResult",
    "Server",
    "ServerDisconnected",
    "ShutdownError",
    "Status",
    "Suppression",
    "Suppressions",
    "SyncMailer",
    "TLSError",
    "TLSMode",
    "Template",
    "TemporaryFailure",
    "Timeouts",
    "TransientError",
    "UnknownOutcomeError",
    "UnsubscribeRequest",
    "UnsubscribeTokens",
    "WrongEventLoopError",
    "__version__",
    "is_one_click",
    "read_recipients",
)

# Public objects report the package as their home, so reprs and docs read "asyncmail.X".
for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__"):
        _obj.__module__ = __name__
del _name, _obj
