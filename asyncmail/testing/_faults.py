"""Faults a CaptureServer injects: declarative values plus the book that hands them out.

A fault names a *phase* of the SMTP dialogue and what the server does there instead of the normal
thing. Faults compose: pass several, add more at runtime with ``CaptureServer.inject``; for each
event the first armed fault that matches wins and is used up once (``times=N`` limits it to the
first ``N`` matches; ``times=None`` never runs out).

Phases:

- ``"greeting"``: the 220 banner on connect.
- ``"ehlo"`` (EHLO and HELO), ``"mail"``, ``"rcpt"``, ``"data"`` (the DATA command itself),
  ``"rset"``, ``"auth"``, ``"quit"``: the reply to that command. ``match`` is a
  case-insensitive substring of the command argument (``"FROM:<a@example.com> SIZE=10"``,
  ``"TO:<b@example.com>"``, the EHLO host name, the AUTH mechanism...).
- ``"dot"``: the reply to the final ``.`` after the content; ``match`` looks into the content.
- ``"bdat"``: the reply to a BDAT chunk other than the last (a server with ``chunking``);
  ``match`` looks into that chunk. A 4xx/5xx reply fails the transaction: later chunks get 503.
- ``"bdat_last"``: the reply to the ``BDAT ... LAST`` chunk, the message's outcome, like
  ``"dot"``; ``match`` looks into the whole content.
- ``"mid_data"``: inside the content (DATA, or all BDAT chunks together), after
  ``after_bytes`` bytes of it.

Kinds:

- ``Fault.reply(phase, code, text)``: answer with that reply instead; the command has no effect
  (a 2xx reply at ``"dot"`` or ``"bdat_last"`` still stores the message). A 421 closes the
  connection after the reply, as RFC 5321 says. An error greeting other than 421 answers 503
  to everything but QUIT.
- ``Fault.disconnect(phase)``: close the connection instead of replying. At ``"dot"`` (and
  ``"bdat_last"``) the message was stored first: the client cannot know, which is exactly the
  case to test.
- ``Fault.disconnect_mid_data(after_bytes=N)``: close after N bytes of content; nothing is stored.
- ``Fault.stall(phase)``: never answer, keep the socket open until the client gives up or the
  server stops. ``"dot"`` and ``"bdat_last"`` store the message first; ``"mid_data"``
  swallows the content after ``after_bytes``.
- ``Fault.close_idle(after)``: close any connection that sent no command for ``after`` seconds.
- ``Fault.delay(phase, seconds)``: answer normally, ``seconds`` late (a slow server). ``"dot"``
  and ``"bdat_last"`` store the message first, so a client that gives up while waiting leaves
  it delivered.

Example::

    faults = [
        Fault.reply("rcpt", 450, "4.2.1 Mailbox busy", match="busy@example.com"),
        Fault.reply("rcpt", 550, "5.1.1 No such user", match="nobody@"),
        Fault.disconnect("dot", times=1),
    ]
    async with CaptureServer(faults=faults) as server:
        ...
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["Fault", "FaultKind", "Phase"]

Phase = Literal[
    "greeting",
    "ehlo",
    "mail",
    "rcpt",
    "data",
    "dot",
    "bdat",
    "bdat_last",
    "rset",
    "auth",
    "quit",
    "mid_data",
]
FaultKind = Literal["reply", "disconnect", "stall", "close_idle", "delay"]

#: Phases whose event carries text a ``match`` can look into.
MATCHABLE_PHASES: frozenset[str] = frozenset(
    {"ehlo", "mail", "rcpt", "dot", "bdat", "bdat_last", "auth"}
)
_PHASES: frozenset[str] = frozenset(get_args(Phase))
_KINDS: frozenset[str] = frozenset(get_args(FaultKind))


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One misbehaviour of the capture server; build it with the class methods.

    Attributes:
        kind: What the server does: ``"reply"``, ``"disconnect"``, ``"stall"``,
            ``"close_idle"`` or ``"delay"``.
        phase: Where in the dialogue (``None`` for ``close_idle``).
        code: The reply code, for ``"reply"``.
        text: The reply text (lines split on ``"\\n"``); ``None`` picks a plain default.
        match: Case-insensitive substring the phase's argument must contain.
        times: How many matches the fault applies to; ``None`` for all of them.
        after_bytes: For phase ``"mid_data"``: how much content is read first.
        after: For ``close_idle``: seconds without a command before closing; for
            ``delay``: seconds before the normal answer.
    """

    kind: FaultKind
    phase: Phase | None = None
    code: int | None = None
    text: str | None = None
    match: str | None = None
    times: int | None = None
    after_bytes: int | None = None
    after: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1 (or None for no limit)")
        if self.kind in ("close_idle", "delay"):
            if self.after is None or not math.isfinite(self.after) or self.after <= 0:
                raise ValueError(f"{self.kind} needs a positive, finite number of seconds")
            if self.kind == "close_idle":
                return
            if self.phase in ("greeting", "mid_data"):
                raise ValueError("delay answers a command or the final dot late")
        if self.phase not in _PHASES:
            raise ValueError(f"unknown phase {self.phase!r}; expected one of {sorted(_PHASES)}")
        if self.match is not None and self.phase not in MATCHABLE_PHASES:
            raise ValueError(f"phase {self.phase!r} has no argument to match")
        if (self.phase == "mid_data") != (self.after_bytes is not None):
            raise ValueError("after_bytes goes with phase 'mid_data', and only with it")
        if self.after_bytes is not None and self.after_bytes < 0:
            raise ValueError("after_bytes must not be negative")
        if self.kind == "reply":
            self._check_reply()

    def _check_reply(self) -> None:
        if self.code is None or not 200 <= self.code <= 599:
            raise ValueError("a reply fault needs a code between 200 and 599")
        if self.phase == "mid_data":
            raise ValueError("there is no reply in the middle of DATA content")
        if self.phase == "greeting" and self.code < 400:
            raise ValueError("a greeting fault needs an error code (4xx or 5xx)")
        if self.text is not None and "\r" in self.text:
            raise ValueError("reply text must not contain CR; separate lines with '\\n'")

    @classmethod
    def reply(
        cls,
        phase: Phase,
        code: int,
        text: str | None = None,
        *,
        match: str | None = None,
        times: int | None = None,
    ) -> Fault:
        """Answer ``code``/``text`` at ``phase`` instead of the normal reply."""
        return cls(kind="reply", phase=phase, code=code, text=text, match=match, times=times)

    @classmethod
    def disconnect(
        cls, phase: Phase, *, match: str | None = None, times: int | None = None
    ) -> Fault:
        """Close the connection instead of answering at ``phase`` (``"dot"``: after storing)."""
        return cls(kind="disconnect", phase=phase, match=match, times=times)

    @classmethod
    def disconnect_mid_data(cls, after_bytes: int, *, times: int | None = None) -> Fault:
        """Close the connection once ``after_bytes`` bytes of content arrived; store nothing."""
        return cls(kind="disconnect", phase="mid_data", after_bytes=after_bytes, times=times)

    @classmethod
    def stall(
        cls,
        phase: Phase,
        *,
        match: str | None = None,
        times: int | None = None,
        after_bytes: int | None = None,
    ) -> Fault:
        """Never answer at ``phase``; ``"mid_data"`` needs ``after_bytes``."""
        return cls(kind="stall", phase=phase, match=match, times=times, after_bytes=after_bytes)

    @classmethod
    def delay(
        cls, phase: Phase, seconds: float, *, match: str | None = None, times: int | None = None
    ) -> Fault:
        """Answer normally at ``phase``, ``seconds`` late (``"dot"``: stores first)."""
        return cls(kind="delay", phase=phase, after=seconds, match=match, times=times)

    @classmethod
    def close_idle(cls, after: float, *, times: int | None = None) -> Fault:
        """Close connections that sent no command for ``after`` seconds."""
        return cls(kind="close_idle", after=after, times=times)

    def reply_lines(self) -> list[str]:
        """The reply as lines without CRLF, continuation dashes included."""
        assert self.code is not None
        text = self.text if self.text is not None else _default_text(self.code)
        lines = text.split("\n") or [""]
        return [
            f"{self.code}{'-' if i < len(lines) - 1 else ' '}{line}".rstrip()
            for i, line in enumerate(lines)
        ]


def _default_text(code: int) -> str:
    if code == 421:
        return "4.3.2 Service not available, closing transmission channel"
    if code < 300:
        return "2.0.0 OK (injected)"
    if code < 400:
        return "Go ahead (injected)"
    if code < 500:
        return "4.3.0 Temporary failure (injected)"
    return "5.0.0 Permanent failure (injected)"


class _Armed:
    """A fault and how many uses it has left."""

    __slots__ = ("fault", "left")

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.left = fault.times


class FaultBook:
    """The faults a server holds, handed out first-match-first; safe to use from any thread."""

    def __init__(self, faults: tuple[Fault, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._armed = [_Armed(fault) for fault in faults]

    def add(self, fault: Fault) -> None:
        """Arm one more fault, after those already armed."""
        with self._lock:
            self._armed.append(_Armed(fault))

    def take(self, phase: Phase, argument: str = "") -> Fault | None:
        """Use up and return the first armed fault for ``phase`` that matches ``argument``."""
        folded = argument.casefold()
        with self._lock:
            for armed in self._armed:
                fault = armed.fault
                if fault.kind == "close_idle" or fault.phase != phase:
                    continue
                if fault.match is not None and fault.match.casefold() not in folded:
                    continue
                self._use(armed)
                return fault
        return None

    def idle_after(self) -> float | None:
        """The shortest idle time after which a connection is closed, if any."""
        with self._lock:
            afters = [a.fault.after for a in self._armed if a.fault.after is not None]
        return min(afters, default=None)

    def take_idle(self) -> bool:
        """Use up the ``close_idle`` fault with the shortest time; False if none is armed."""
        with self._lock:
            idle = [a for a in self._armed if a.fault.kind == "close_idle"]
            if not idle:
                return False
            self._use(min(idle, key=lambda a: a.fault.after or 0.0))
            return True

    def _use(self, armed: _Armed) -> None:
        if armed.left is not None:
            armed.left -= 1
            if armed.left == 0:
                self._armed.remove(armed)
