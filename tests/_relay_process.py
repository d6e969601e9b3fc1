"""``asyncmail relay`` as a real process, its output read line by line on a thread."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time

PATIENCE = 20.0
STARTED = r"relay listening on [^ ]+:(\d+)"


class RelayProcess:
    """One ``asyncmail relay ARGS...`` process."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, measured: bool = True
    ) -> None:
        """Start it; ``measured=False`` leaves it out of coverage (a relay killed with
        SIGKILL writes no coverage data anyway)."""
        code = "from asyncmail.cli import main; main()"
        base = dict(os.environ)
        if not measured:
            base = {k: v for k, v in base.items() if not k.startswith("COVERAGE_")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, "relay", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**base, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, pattern: str) -> re.Match[str]:
        """The first line from now on that matches ``pattern``.

        Raises:
            AssertionError: The process exited first, or nothing matched in time.
        """
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in:\n" + self.output) from None
            if line is None:
                raise AssertionError(f"exited before {pattern!r}:\n" + self.output)
            self.lines.append(line)
            if m := re.search(pattern, line):
                return m

    def started(self) -> int:
        """Wait for the start line; the port listened on."""
        return int(self.wait_for_line(STARTED).group(1))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def finish(self) -> int:
        """Wait for the exit; its code (the output is in ``lines``)."""
        code = self.process.wait(timeout=PATIENCE)
        while (line := self._queue.get(timeout=PATIENCE)) is not None:
            self.lines.append(line)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
