"""The DSN parameters (RFC 3461) of a CaptureServer's MAIL and RCPT: taken off and checked.

aiosmtpd knows no DSN, so the protocol hands it the command without them and records them
as they came.
"""

from __future__ import annotations

import re

__all__ = ["DSNError", "split_dsn"]

_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+")
_KEYWORDS = {"MAIL": ("RET", "ENVID"), "RCPT": ("NOTIFY", "ORCPT")}
_NOTIFY = re.compile(r"NEVER|(?:SUCCESS|FAILURE|DELAY)(?:,(?:SUCCESS|FAILURE|DELAY))*", re.I)
_ADDR_TYPE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*)")


class DSNError(ValueError):
    """A malformed DSN parameter: the reply says which."""


def split_dsn(command: str, arg: str) -> tuple[str, tuple[str, ...]]:
    """``arg`` of MAIL or RCPT without its DSN parameters, and those parameters as sent.

    Raises:
        DSNError: a DSN parameter is malformed or repeated.
    """
    end = arg.rfind(">") + 1
    if not end:
        return arg, ()
    keep: list[str] = []
    dsn: list[str] = []
    seen: set[str] = set()
    for param in arg[end:].split():
        keyword, _, value = param.partition("=")
        key = keyword.upper()
        if key not in _KEYWORDS[command]:
            keep.append(param)
            continue
        if key in seen:
            raise DSNError(f"{key} given twice")
        seen.add(key)
        if not _valid(key, value):
            raise DSNError(f"malformed {key} parameter {value!r}")
        dsn.append(param)
    return " ".join([arg[:end], *keep]), tuple(dsn)


def _valid(key: str, value: str) -> bool:
    if key == "RET":
        return value.upper() in ("FULL", "HDRS")
    if key == "ENVID":
        return len(value) <= 100 and _XTEXT.fullmatch(value) is not None
    if key == "NOTIFY":
        events = value.upper().split(",")
        return _NOTIFY.fullmatch(value) is not None and len(set(events)) == len(events)
    addr_type, semi, address = value.partition(";")  # ORCPT
    if not semi or len(value) > 500 or _ADDR_TYPE.fullmatch(addr_type) is None:
        return False
    if addr_type.lower() == "utf-8" and not address.isascii():  # RFC 6533 unitext
        return address.isprintable() and " " not in address
    return _XTEXT.fullmatch(address) is not None
