"""Relaxed canonicalisation (RFC 6376 3.4.2, 3.4.4) and the header block of a message.

Pure functions over CRLF-only message bytes, as ``wire_content`` produces them before
dot-stuffing. A verifier canonicalises the bytes it receives the same way, so the form a
message takes on the wire must be the one that was canonicalised here.
"""

from __future__ import annotations

import re

__all__ = ["Field", "relaxed_body", "relaxed_header", "split_message", "tags"]

#: One header field: its lower-cased name and its whole text (folded lines, no final CRLF).
Field = tuple[bytes, bytes]

#: A run that is not already one space: what relaxed canonicalisation changes.
_WSP_TO_COLLAPSE = re.compile(rb"\t[ \t]*| [ \t]+")
_WSP_BEFORE_CRLF = re.compile(rb"[ \t]+\r\n")


def split_message(data: bytes) -> tuple[list[Field], bytes]:
    """The header fields of CRLF-only ``data``, in order, and its body.

    A line that does not start a field (no colon) is kept as part of the field before it,
    as a verifier would read it; a message without an empty line is all header.
    """
    end = data.find(b"\r\n\r\n")
    if data.startswith(b"\r\n"):
        head, body = b"", data[2:]
    elif end < 0:
        head, body = data, b""
    else:
        head, body = data[: end + 2], data[end + 4 :]
    fields: list[Field] = []
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in b" \t" and fields:
            name, text = fields[-1]
            fields[-1] = (name, text + b"\r\n" + line)
        else:
            fields.append((line.partition(b":")[0].rstrip(b" \t").lower(), line))
    return fields, body


def relaxed_header(field: bytes) -> bytes:
    """The relaxed form of one header field, with its final CRLF (RFC 6376 3.4.2).

    The name lower-cased, the value unfolded, each run of spaces and tabs made one space,
    and none at the start or end of the value, nor around the colon.
    """
    name, _, value = field.partition(b":")
    if b"\r\n" in value:
        value = value.replace(b"\r\n", b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_TO_COLLAPSE.sub(b" ", value)
    value = value.strip(b" \t")
    return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """The relaxed form of a body (RFC 6376 3.4.4, with erratum 3133 for an empty body).

    Spaces and tabs at the end of each line removed, every other run made one space, the
    empty lines at the end removed; a body that is empty after this hashes as empty.
    """
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"  # what dot-stuffing adds on the wire
    # (the searches for what to change skip most of the work on most bodies: a regex
    # substitution of every single space costs more than the signature)
    if b"\t" in body or b"  " in body:
        body = _WSP_TO_COLLAPSE.sub(b" ", body)
    if b" \r\n" in body:
        body = _WSP_BEFORE_CRLF.sub(b"\r\n", body)
    if body.endswith(b"\r\n\r\n"):  # (CRLF-only: every trailing CR or LF is of a CRLF)
        body = body.rstrip(b"\r\n") + b"\r\n"
    return b"" if body == b"\r\n" else body


def tags(value: bytes) -> dict[bytes, bytes]:
    """The tag=value pairs of a DKIM-Signature value, whitespace removed (RFC 6376 3.2).

    Malformed pairs are skipped: this only reads signatures to know who already signed.
    """
    found: dict[bytes, bytes] = {}
    for pair in value.split(b";"):
        name, equals, text = pair.partition(b"=")
        if equals:
            found[re.sub(rb"\s+", b"", name)] = re.sub(rb"\s+", b"", text)
    return found
