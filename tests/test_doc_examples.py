"""Every ```python block of README.md and docs/ runs as written and passes mypy --strict.

A block runs here against a real capture server (``ASYNCMAIL_URL`` points at it, the working
directory is a temporary one), unless the Markdown line before it says otherwise:

- ``<!-- example: typecheck -->``: it needs a real provider, key files or a web server, so it
  is only type-checked;
- ``<!-- example: fragment -->``: neither (keep these rare: ``FRAGMENTS`` lists them).

All the blocks are type-checked by one ``mypy --strict`` process, each block a module of its
own, so each must be complete: its imports, its types. A failure names the block by
``file:line`` of its opening fence.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import asyncmail
from asyncmail.testing import CaptureServer, outbox

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")))
MARKER = re.compile(r"<!-- example: (typecheck|fragment) -->")

#: The blocks that are deliberately incomplete (neither run nor type-checked).
FRAGMENTS: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Block:
    """One ```python block: where it is, its code, and how it is checked."""

    path: Path
    line: int  # of the opening fence, 1-based
    code: str
    mark: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def module(self) -> str:
        stem = re.sub(r"\W", "_", str(self.path.relative_to(ROOT).with_suffix("")))
        return f"{stem.lower()}_L{self.line}"


def _blocks_in(path: Path) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```python":
            i += 1
            continue
        before = next((line for line in reversed(lines[:i]) if line.strip()), "")
        found = MARKER.search(before)
        end = lines.index("```", i + 1)
        code = "\n".join(lines[i + 1 : end]) + "\n"
        yield Block(path, i + 1, code, found.group(1) if found else None)
        i = end + 1


BLOCKS = [block for path in SOURCES for block in _blocks_in(path)]
RUN = [b for b in BLOCKS if b.mark is None]
TYPECHECK = [b for b in BLOCKS if b.mark != "fragment"]


def _ids(blocks: list[Block]) -> list[str]:
    return [b.where for b in blocks]


def test_every_source_has_its_blocks_found() -> None:
    """The collector sees the README's and the guide's examples (a broken fence hides them)."""
    where = {b.path.name for b in BLOCKS}
    assert {"README.md", "getting-started.md", "web-apps.md", "testing.md"} <= where
    assert len(BLOCKS) >= 30


def test_fragments_are_the_listed_few() -> None:
    assert tuple(b.where for b in BLOCKS if b.mark == "fragment") == FRAGMENTS


def test_api_reference_documents_every_public_name() -> None:
    page = (ROOT / "docs" / "reference" / "asyncmail.md").read_text(encoding="utf-8")
    documented = re.findall(r"^::: asyncmail\.(\w+)$", page, re.M)
    assert sorted(documented) == sorted(set(asyncmail.__all__) - {"__version__"})


# --- type-checking: one mypy --strict process for every block -----------------------------

_MYPY_CONFIG = """\
[mypy]
strict = True
python_version = 3.11
mypy_path = {root}

[mypy-aiosmtpd.*,trustme.*,uvloop.*,dkim.*]
ignore_missing_imports = True
"""
_MYPY_LINE = re.compile(r"^(?P<file>[^:\n]+\.py):(?P<line>\d+): (?P<rest>.*)$")


def _without_coverage() -> dict[str, str]:
    """This environment without coverage's subprocess hook: mypy runs no asyncmail code."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS_")}


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Each block's mypy messages, with the line numbers of its Markdown file."""
    folder = tmp_path_factory.mktemp("doc_examples")
    files = []
    for block in TYPECHECK:
        file = folder / f"{block.module}.py"
        file.write_text(block.code, encoding="utf-8")
        files.append(str(file))
    config = folder / "mypy.ini"
    config.write_text(_MYPY_CONFIG.format(root=ROOT), encoding="utf-8")
    # a cache that outlives the run (under the system's temp folder) keeps re-runs quick
    cache = Path(tempfile.gettempdir()) / "asyncmail-doc-examples-mypy-cache"
    command = [sys.executable, "-m", "mypy", "--config-file", str(config)]
    done = subprocess.run(
        [*command, "--cache-dir", str(cache), "--no-error-summary", "--show-error-codes", *files],
        capture_output=True,
        text=True,
        cwd=folder,
        env=_without_coverage(),
        timeout=600,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: mypy itself failed
    by_module = {b.module: b for b in TYPECHECK}
    report: dict[str, list[str]] = {b.module: [] for b in TYPECHECK}
    for line in done.stdout.splitlines():
        match = _MYPY_LINE.match(line)
        if match is None or Path(match["file"]).stem not in by_module:
            continue  # a note about another module, or a continuation line
        block = by_module[Path(match["file"]).stem]
        report[block.module].append(
            f"{block.path.relative_to(ROOT)}:{block.line + int(match['line'])}: {match['rest']}"
        )
    return report


@pytest.mark.parametrize("block", TYPECHECK, ids=_ids(TYPECHECK))
def test_example_type_checks(block: Block, mypy_report: dict[str, list[str]]) -> None:
    assert mypy_report[block.module] == [], "\n".join(mypy_report[block.module])


# --- running: against a capture server, never another host ---------------------------------

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def _is_loopback(host: object) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse (and record) any name lookup or connection to a host other than loopback."""
    attempts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        if host is not None and not _is_loopback(host):
            attempts.append(str(host))
            raise socket.gaierror(f"doc examples stay on loopback, not {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:  # noqa: ANN401
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            attempts.append(str(address[0]))
            raise ConnectionRefusedError(f"doc examples stay on loopback, not {address[0]!r}")
        real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def _run_tests_defined(namespace: dict[str, Any]) -> None:
    """Call the ``test_*`` functions a block defines, with the plugin's fixtures if asked."""
    for name, function in list(namespace.items()):
        if not (name.startswith("test_") and inspect.isfunction(function)):
            continue
        params = set(inspect.signature(function).parameters)
        known = {"mail_server", "mail_outbox", "memory_outbox"}
        assert params <= known, f"{name} wants fixtures {params}"
        marks = [m for m in getattr(function, "pytestmark", []) if m.name == "mail_server"]
        with CaptureServer(**(marks[0].kwargs if marks else {})).run_in_thread() as server:
            outbox.clear()  # (as the plugin does before each test)
            fixtures = {
                "mail_server": server,
                "mail_outbox": server.messages,
                "memory_outbox": outbox,
            }
            _call(function, {p: fixtures[p] for p in params})


def _call(function: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    if inspect.iscoroutinefunction(function):
        asyncio.run(function(**kwargs))
    else:
        function(**kwargs)


@pytest.mark.parametrize("block", RUN, ids=_ids(RUN))
def test_example_runs(
    block: Block,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    loopback_only: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UNSUBSCRIBE_SECRET", "a long random secret for the doc examples")
    with CaptureServer().run_in_thread() as server:
        monkeypatch.setenv("ASYNCMAIL_URL", server.url)
        namespace: dict[str, Any] = {"__name__": block.module}
        try:
            exec(compile(block.code, block.where, "exec"), namespace)
            _run_tests_defined(namespace)
        finally:
            assert not loopback_only, (
                f"{block.where} reached for {loopback_only}: mark it <!-- example: typecheck -->"
            )
