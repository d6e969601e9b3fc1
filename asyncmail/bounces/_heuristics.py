"""Plain-text bounces, read by the wording of the systems that write them.

Not every mail system sends RFC 3464 reports. Each reader here knows one family:

* ``angle_paragraphs``: qmail's QSBMF (``<addr>:`` then the reason; D. J. Bernstein's
  "qmail-send bounce message format") and Yahoo's qmail-derived notices.
* ``exim``: Exim's "The following address(es) failed:" (and "deferred:") lists.
* ``exchange``: Exchange/Outlook.com text NDRs: "Diagnostic information for administrators",
  an address, then ``#550 5.1.1 ...`` or ``Remote Server returned '...'``.
* ``labelled``: Chinese providers (QQ, 163/NetEase, Coremail): ``收件人: addr`` and the
  reason under ``退信原因``; also ``addr: 550 ...`` lines of unknown systems.

They run only on a message that already looks like a bounce (``_parse`` decides), so a
normal letter that mentions an address is not mistaken for one.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ._model import BouncedRecipient
from ._text import MAX_RECIPIENTS, infer_status, one_line

__all__ = ["TextReport", "read_text", "split_copy"]

TextReport = tuple[list[BouncedRecipient], str]  # recipients, reporting MTA

_LOCAL = r"[^\s<>()\[\],;:\"'@]{1,64}"
_DOMAIN = r"[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}"
_ADDR = rf"(?<![^\s<>()\[\],;:\"'：，]){_LOCAL}@{_DOMAIN}"
ADDRESS = re.compile(_ADDR)

# Where the returned copy of the original message starts: nothing after it is the report.
_COPY = re.compile(
    r"^[ \t]*(?:-+ ?Below this line is a copy of the message|"
    r"-+ This is a copy of the message|-+ The header of the original message|"
    r"Original message headers:|-+ ?Original message ?-+|-+ ?原邮件|原始邮件(?:头|信息)?[:：]|"
    r"-+ ?Forwarded message)",
    re.IGNORECASE | re.MULTILINE,
)
_QMAIL_RCPT = re.compile(rf"^<({_LOCAL}@{_DOMAIN})>:[ \t]*(.*)$", re.MULTILINE)
_PARAGRAPH_END = re.compile(r"\r?\n[ \t]*\r?\n|\r?\n<[^>\s]{1,320}>:")
_EXIM_LIST = re.compile(
    r"following (?:address\(es\)|addresses|recipient\(s\)) (failed|deferred|could not)",
    re.IGNORECASE,
)
_EXIM_ADDR = re.compile(rf"^ {{1,3}}({_LOCAL}@{_DOMAIN})(?:\s*$|[: ]\s*(.*)$)")
_HOST = re.compile(r"\bhost ([\w.-]{1,253}) \[")
_EXCHANGE_ADMIN = re.compile(r"Diagnostic information for administrators", re.IGNORECASE)
_EXCHANGE_RCPT = re.compile(
    rf"^[ \t]*<?({_LOCAL}@{_DOMAIN})>?[ \t]*\r?\n[ \t]*"
    r"(#\d{3}[^\r\n]{0,2000}|Remote Server returned [^\r\n]{0,2000})",
    re.MULTILINE | re.IGNORECASE,
)
_GENERATING = re.compile(r"Generating server:[ \t]*([\w.-]{1,253})", re.IGNORECASE)
_LABEL = re.compile(
    r"(?:收\s*件\s*人|收信人|Recipient|Original recipient)(?:地址|\s+address)?\s*[:：]"
    r"[ \t]*([^\r\n]{0,500})",
    re.IGNORECASE,
)
_REASON = re.compile(
    r"(?:退信原因|失败原因|错误原因|Reason)\s*[:：]?[ \t]*\r?\n?[ \t]*([^\r\n]{1,2000})"
)
_REPLY = re.compile(r"(?<!\d)[45]\d\d(?!\d)[^\r\n]{0,2000}")
_ADDR_REPLY = re.compile(
    rf"({_ADDR})>?[ \t]*[:：,][ \t]*([^\r\n]{{0,2000}}?(?<!\d)[45]\d\d(?!\d)[^\r\n]{{0,2000}})"
)


def split_copy(text: str) -> tuple[str, str]:
    """The report's own text, and the returned copy of the original (or "")."""
    match = _COPY.search(text)
    return (text[: match.start()], text[match.start() :]) if match else (text, "")


def read_text(report: str) -> TextReport:
    """The recipients a plain-text bounce names, by the first reader that finds any."""
    readers: tuple[Callable[[str], TextReport], ...] = (
        _angle_paragraphs,
        _exim,
        _exchange,
        _labelled,
    )
    for reader in readers:
        found, mta = reader(report)
        if found:
            return found[:MAX_RECIPIENTS], mta
    return [], ""


def _failed(
    address: str, diagnostic: str, *, action: str = "failed", mta: str = ""
) -> BouncedRecipient:
    diagnostic = one_line(diagnostic)
    return BouncedRecipient(
        original_recipient=address,
        final_recipient=address,
        action=action,
        status=infer_status(diagnostic, permanent=action == "failed"),
        diagnostic=diagnostic,
        remote_mta=mta,
    )


def _angle_paragraphs(report: str) -> TextReport:
    found = []
    for match in _QMAIL_RCPT.finditer(report):
        end = _PARAGRAPH_END.search(report, match.start(2))
        found.append(_failed(match.group(1), report[match.start(2) : end.start() if end else None]))
        if len(found) >= MAX_RECIPIENTS:
            break
    return found, ""


def _exim(report: str) -> TextReport:
    found: list[BouncedRecipient] = []
    for listing in _EXIM_LIST.finditer(report):
        action = "delayed" if listing.group(1).lower() == "deferred" else "failed"
        entries: list[tuple[str, list[str]]] = []
        for line in report[listing.end() :].splitlines()[1:]:
            address = _EXIM_ADDR.match(line)
            if address:
                entries.append((address.group(1), [address.group(2) or ""]))
            elif line.strip() and not line[:1].isspace():
                break  # the list ends at the next unindented line
            elif line.strip() and entries:
                entries[-1][1].append(line.strip())
        for address_text, detail in entries:
            text = " ".join(detail)
            host = _HOST.search(text)
            found.append(
                _failed(address_text, text, action=action, mta=host.group(1) if host else "")
            )
    return found, ""


def _exchange(report: str) -> TextReport:
    admin = _EXCHANGE_ADMIN.search(report)
    if admin is None:
        return [], ""
    section = report[admin.end() :]
    found = [
        _failed(m.group(1), m.group(2).strip("#").replace("Remote Server returned", ""))
        for m in _EXCHANGE_RCPT.finditer(section)
    ]
    generating = _GENERATING.search(section)
    return found, generating.group(1) if generating else ""


def _labelled(report: str) -> TextReport:
    addresses = []
    for label in _LABEL.finditer(report):
        addresses += [a for a in ADDRESS.findall(label.group(1)) if a not in addresses]
    if addresses:
        reason = _REASON.search(report)
        diagnostic = reason.group(1) if reason else ""
        if not _REPLY.search(diagnostic):
            reply = _REPLY.search(report[reason.start() :] if reason else report)
            diagnostic = f"{diagnostic} {reply.group(0)}" if reply else diagnostic
        return [_failed(address, diagnostic) for address in addresses], ""
    found: list[BouncedRecipient] = []
    for match in _ADDR_REPLY.finditer(report):
        if all(r.original_recipient != match.group(1) for r in found):
            found.append(_failed(match.group(1), match.group(2)))
    return found, ""
