"""The command that resumes an interrupted batch, printed after Ctrl-C (or giving up).

It is the command line that was run, rebuilt from the options given (defaults left out),
with ``--resume REPORT`` instead of ``--report``. A password in a URL option is never
printed: a URL read from ``ASYNCMAIL_URL`` is left out (the variable still holds it); one
given with ``--url`` is shown with ``****`` for the password, and a note says so.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
from click.core import ParameterSource

from ._batch import Counts

__all__ = ["redact", "resume_command", "resume_lines"]

PROGRAM = "asyncmail"
HIDDEN = "****"
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")
# Options that do not carry over to the resumed run.
_DROPPED = frozenset({"report", "resume", "dry_run", "preview", "preview_count"})


def redact(value: str) -> str:
    """``value`` with the password of any ``scheme://user:password@`` in it hidden."""
    return _PASSWORD.sub(lambda m: f"{m['head']}{HIDDEN}@", value)


def resume_command(ctx: click.Context, report: Path) -> tuple[list[str], bool]:
    """The resume command's words, and whether a password in it was hidden."""
    words = [PROGRAM, ctx.info_name or "batch"]
    hidden = False
    for param in ctx.command.params:
        name = param.name
        if name is None or name in _DROPPED:
            continue
        source = ctx.get_parameter_source(name)
        if source in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            continue
        if source is ParameterSource.ENVIRONMENT:
            continue  # (the variable still holds it)
        value = ctx.params[name]
        if isinstance(param, click.Argument):
            words.append(str(value))
            continue
        flag = max(param.opts, key=len)
        if isinstance(param, click.Option) and param.is_flag:
            if value:
                words.append(flag)
            continue
        for item in value if isinstance(value, tuple | list) else [value]:
            text = redact(str(item))
            hidden = hidden or text != str(item)
            words += [flag, text]
    words += ["--resume", str(report)]
    return words, hidden


def resume_lines(ctx: click.Context, counts: Counts, report: Path) -> list[str]:
    """What to print: how far the run got and the command that goes on from there."""
    words, hidden = resume_command(ctx, report)
    why = "Interrupted" if counts.interrupted else "Stopped"
    lines = [f"{why} after {counts.done} of {counts.total}. Resume with: {shlex.join(words)}"]
    if hidden:
        lines.append(
            f"(the password is shown as {HIDDEN}: put it back, or set ASYNCMAIL_URL "
            "and leave out --url)"
        )
    return lines
