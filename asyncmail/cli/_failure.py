"""How ``send`` and ``check`` word a failed connection: one line naming the step, and a hint.

Both commands print the same lines for the same failure (a refused AUTH, a missing STARTTLS,
a wrong port or TLS mode, a refused connection, an untrusted certificate), so what ``check``
says is what ``send`` would have said. The error text comes from the one boundary that maps
aiosmtplib's errors (``smtp._handshake.map_error``): no aiosmtplib class name reaches it.
"""

from __future__ import annotations

from .._config import Server
from .._exceptions import DeliveryError, Phase, TLSError

__all__ = ["failure_lines"]

_PORTS = "587 for smtp:// with STARTTLS, 465 for smtps://"


def failure_lines(error: DeliveryError, server: Server | None) -> list[str]:
    """The step that failed with the mapped error, then a ``hint:`` line when there is one."""
    lines = [_headline(error, server)]
    hint = _hint(error, server)
    if hint:
        lines.append(f"hint: {hint}")
    return lines


def _headline(error: DeliveryError, server: Server | None) -> str:
    if error.phase is Phase.AUTH:
        user = f" as {server.username}" if server is not None and server.username else ""
        return f"AUTH: FAILED{user}: {error}"
    if isinstance(error, TLSError) or error.phase is Phase.STARTTLS:
        return f"TLS: FAILED: {error}"
    if error.phase is Phase.EHLO:
        return f"EHLO: FAILED: {error}"
    if error.phase is Phase.GREETING:
        return f"greeting: FAILED: {error}"
    if error.phase is Phase.CONNECT:
        return f"connection: FAILED: {error}"
    step = error.phase.value if error.phase is not None else "sending"
    return f"{step}: FAILED: {error}"


def _hint(error: DeliveryError, server: Server | None) -> str:
    text = str(error)
    where = f"{server.host}:{server.effective_port}" if server is not None else "the server"
    if error.phase is Phase.AUTH and getattr(error, "code", None) in (530, 534, 535):
        return (
            "the server refused the user name or password in the URL: check both "
            "(some providers want an app password); a password with @ # / ? must be "
            "percent-encoded"
        )
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return (
            f"the certificate of {where} is not trusted here: check the host name, or give "
            "the CA that signed it with ?ca_file=PATH"
        )
    if error.phase is Phase.CONNECT and "timed out" in text:
        return f"nothing answered at {where}: check the host and port ({_PORTS}), or a firewall"
    if error.phase is Phase.CONNECT:
        return f"nothing accepts connections at {where}: check the host and port ({_PORTS})"
    return ""
