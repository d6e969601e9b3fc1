"""What the CLI tests share: running the command in-process or as a process, CSV lists and
reports, and counting copies at a capture server."""

from __future__ import annotations

import collections
import csv
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from click.testing import CliRunner

from asyncmail.cli._app import cli
from asyncmail.testing import CaptureServer

SENDER = "Shop <shop@example.com>"
PASSWORD = "s3cret-Pa55"


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the command in this process: its exit code and what it printed."""
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Run the command as a process of its own, its output (and errors) on one pipe."""
    code = "from asyncmail.cli import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def wait_for_starts(journal: Path, count: int, process: subprocess.Popen[str]) -> None:
    """Wait until a running batch's journal says ``count`` sends started."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        if journal.exists() and journal.read_text().count("\nS ") >= count:
            return
        time.sleep(0.01)
    raise AssertionError("the batch did not start enough sends")


def write_csv(
    path: Path, rows: Sequence[Sequence[str]], header: str = "email,name,code", sep: str = ","
) -> Path:
    """A recipient list: ``header`` and ``rows``, fields split by ``sep``."""
    lines = [header.replace(",", sep), *(sep.join(row) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def copies(server: CaptureServer) -> collections.Counter[str]:
    """How many copies each recipient got."""
    return collections.Counter(r for m in server.messages for r in m.recipients)
