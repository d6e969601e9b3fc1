"""``asyncmail outbox status|list|retry|purge`` and ``batch --outbox``, against SQLite outboxes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
import sys
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from asyncmail import Mailer, Message, Outbox, OutboxState, OutboxStatus
from asyncmail.batch._journal import Journal, ReportRow, journal_path
from asyncmail.cli._app import cli
from asyncmail.testing import CaptureServer, Fault

REFUSAL = "5.1.1 No such user here"
#: Wide enough that rich never folds a key or an error in a table.
WIDE = {"COLUMNS": "250"}


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def message(to: str) -> Message:
    return Message(sender="shop@example.com", to=to, subject="Your order", text="hello")


async def _settled(outbox: Outbox) -> bool:
    counts = (await outbox.statistics()).counts
    return not any(counts[s] for s in (OutboxState.QUEUED, OutboxState.LEASED, OutboxState.SENDING))


async def _fill(url: str, server: CaptureServer) -> None:
    async with Mailer(server.url) as mailer, Outbox(url) as outbox:
        await outbox.enqueue(message("ann@example.com"), key="order:0")
        await outbox.enqueue(message("nobody@example.com"), key="order:1")
        await outbox.enqueue(message("bob@example.com"), key="order:2")
        async with outbox.deliver(mailer, concurrency=3):
            with anyio.fail_after(10):
                while not await _settled(outbox):  # noqa: ASYNC110
                    await anyio.sleep(0.02)
        await outbox.enqueue(message("later@example.com"), key="order:3")


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An outbox with order:0 and order:2 delivered, order:1 failed (550), order:3 queued."""
    path = tmp_path_factory.mktemp("filled") / "outbox.db"
    faults = [Fault.reply("rcpt", 550, REFUSAL, match="nobody@")]
    with CaptureServer(faults=faults).run_in_thread() as server:
        asyncio.run(_fill(f"sqlite:///{path}", server))
    return path  # (closed: the last connection folded the WAL into the file)


@pytest.fixture
def outbox_url(filled: Path, tmp_path: Path) -> str:
    """A copy of the filled outbox, for one test to change."""
    path = tmp_path / "outbox.db"
    shutil.copyfile(filled, path)
    return f"sqlite:///{path}"


def status_of(url: str, key: str) -> OutboxStatus | None:
    async def go() -> OutboxStatus | None:
        async with Outbox(url) as outbox:
            return await outbox.status(key)

    return asyncio.run(go())


def all_entries(url: str) -> list[OutboxStatus]:
    async def go() -> list[OutboxStatus]:
        async with Outbox(url) as outbox:
            return await outbox.entries(limit=1000)

    return asyncio.run(go())


# --- status -----------------------------------------------------------------------------


def test_status_counts_states_the_oldest_queued_and_the_rate(outbox_url: str) -> None:
    code, output = invoke("outbox", "status", "--outbox", outbox_url)
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == f"outbox {outbox_url}"
    counts = dict(line.split() for line in lines[1:7])
    assert counts == {
        "queued": "1",
        "leased": "0",
        "sending": "0",
        "delivered": "2",
        "failed": "1",
        "unknown": "0",
    }
    assert lines[7].startswith("oldest queued: waiting for ")
    assert lines[8].startswith("rate: 0.05 messages/s")  # 3 finished in the last minute


def test_status_json(outbox_url: str) -> None:
    code, output = invoke("outbox", "status", "--outbox", outbox_url, "--json")
    assert code == 0, output
    data = json.loads(output)
    assert data["outbox"] == outbox_url
    assert data["counts"] == {
        "queued": 1,
        "leased": 0,
        "sending": 0,
        "delivered": 2,
        "failed": 1,
        "unknown": 0,
    }
    assert data["oldest_queued_age"] >= 0
    assert data["rate"] == pytest.approx(3 / 60)


def test_status_of_a_failed_message_shows_the_servers_code_and_text(outbox_url: str) -> None:
    code, output = invoke("outbox", "status", "--outbox", outbox_url, "--key", "order:1")
    assert code == 0, output
    assert "state:        failed" in output.splitlines()
    assert "attempts:     1" in output.splitlines()
    assert f"refused:      nobody@example.com: 550 {REFUSAL}" in output.splitlines()
    code, output = invoke("outbox", "status", "--outbox", outbox_url, "--key", "order:1", "--json")
    assert code == 0, output
    data = json.loads(output)
    assert data["key"] == "order:1" and data["state"] == "failed"
    assert data["refused"] == {
        "nobody@example.com": {"code": 550, "text": REFUSAL, "retryable": False}
    }
    assert data["next_attempt_at"] is None


def test_status_of_an_unknown_key_exits_1(outbox_url: str) -> None:
    code, output = invoke("outbox", "status", "--outbox", outbox_url, "--key", "nope")
    assert code == 1
    assert output == "no message under the key 'nope'\n"


# --- list -------------------------------------------------------------------------------


def test_list_is_a_table_with_the_servers_words(outbox_url: str) -> None:
    code, output = invoke("outbox", "list", "--outbox", outbox_url, env=WIDE)
    assert code == 0, output
    header, rows = output.splitlines()[0], output.splitlines()[2:]
    assert header.split() == ["key", "┃", "state", "┃", "attempts", "┃", "updated", "┃", "error"]
    assert len(rows) == 4
    [failed] = [row for row in rows if "order:1" in row]
    assert [cell.strip() for cell in failed.split("│")][:3] == ["order:1", "failed", "1"]
    assert failed.rstrip().endswith(f"550 {REFUSAL}")


def test_list_of_one_state_as_json(outbox_url: str) -> None:
    code, output = invoke("outbox", "list", "--outbox", outbox_url, "--state", "failed", "--json")
    assert code == 0, output
    [entry] = json.loads(output)
    assert entry["key"] == "order:1"
    assert entry["refused"]["nobody@example.com"]["code"] == 550
    code, output = invoke("outbox", "list", "--outbox", outbox_url, "--limit", "2", "--json")
    assert len(json.loads(output)) == 2


# --- retry and purge --------------------------------------------------------------------


def test_retry_queues_failed_messages_again(outbox_url: str) -> None:
    code, output = invoke("outbox", "retry", "--outbox", outbox_url, "--key", "nope")
    assert (code, output) == (0, "queued 0 messages again\n")
    code, output = invoke("outbox", "retry", "--outbox", outbox_url)
    assert (code, output) == (0, "queued 1 message again\n")
    status = status_of(outbox_url, "order:1")
    assert status is not None and status.state is OutboxState.QUEUED
    assert status.pending == ("nobody@example.com",)


def test_purge_deletes_messages_that_ended(outbox_url: str) -> None:
    code, output = invoke(
        "outbox", "purge", "--outbox", outbox_url, "--state", "delivered", "--older-than", "7d"
    )
    assert (code, output) == (0, "deleted 0 messages (delivered)\n")
    code, output = invoke("outbox", "purge", "--outbox", outbox_url, "--state", "delivered")
    assert (code, output) == (0, "deleted 2 messages (delivered)\n")
    code, output = invoke("outbox", "purge", "--outbox", outbox_url)
    assert (code, output) == (0, "deleted 1 message (delivered, failed, unknown)\n")
    assert [e.key for e in all_entries(outbox_url)] == ["order:3"]


def test_purge_refuses_a_duration_it_cannot_read(outbox_url: str) -> None:
    code, output = invoke("outbox", "purge", "--outbox", outbox_url, "--older-than", "soon")
    assert code == 2
    assert "'soon' is not a duration" in output


# --- outboxes that cannot be used -------------------------------------------------------

COMMANDS = [
    ["outbox", "status"],
    ["outbox", "list"],
    ["outbox", "retry"],
    ["outbox", "purge"],
    ["worker", "--url", "smtp://127.0.0.1:1"],
]


def files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_foreign_database_exits_2_in_one_line_and_is_left_untouched(
    tmp_path: Path, command: list[str]
) -> None:
    path = tmp_path / "shop.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
    db.execute("INSERT INTO orders VALUES (1, 9.5)")
    db.commit()
    db.close()
    before = files(tmp_path)
    code, output = invoke(*command, "--outbox", f"sqlite:///{path}")
    assert code == 2, output
    assert output == (
        f"error: sqlite:///{path}: this database is not an asyncmail outbox (it holds other "
        "tables); refusing to touch it: give the outbox a file of its own\n"
    )
    assert files(tmp_path) == before


def test_a_file_that_is_not_a_database_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database at all", encoding="utf-8")
    code, output = invoke("outbox", "status", "--outbox", f"sqlite:///{path}")
    assert code == 2
    assert output == (
        f"error: sqlite:///{path}: this file is not an asyncmail outbox: file is not a database\n"
    )
    assert path.read_text(encoding="utf-8") == "not a database at all"


def test_an_unreachable_outbox_exits_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'outbox.db'}"
    code, output = invoke("outbox", "list", "--outbox", url)
    assert code == 2
    assert output.startswith(f"error: no outbox at {url}: ")
    assert "does not exist" in output


def test_an_outbox_url_of_another_kind_exits_2_without_its_password() -> None:
    code, output = invoke("outbox", "status", "--outbox", "postgres://app:hunter2@db/mail")
    assert code == 2
    assert output.startswith("error: unsupported outbox URL 'postgres://app:***@db/mail'")
    assert "hunter2" not in output


def test_worker_metrics_without_prometheus_client_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # (import fails)
    code, output = invoke(
        "worker",
        *("--outbox", f"sqlite:///{tmp_path / 'o.db'}", "--url", "smtp://127.0.0.1:1"),
        *("--metrics-port", "0"),
    )
    assert code == 2
    assert output == ("error: metrics need prometheus-client: pip install 'asyncmail[metrics]'\n")


# --- batch --outbox ---------------------------------------------------------------------


@pytest.fixture
def template(tmp_path: Path) -> Path:
    folder = tmp_path / "template"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hello {{ name }}\n", encoding="utf-8")
    (folder / "body.txt").write_text("Dear {{ name }}\n", encoding="utf-8")
    return folder


@pytest.fixture
def recipients(tmp_path: Path) -> Path:
    path = tmp_path / "people.csv"
    path.write_text(
        "email,name\nann@example.com,Ann\nbob@example.com,Bob\nAnn@Example.com,Ann again\n",
        encoding="utf-8",
    )
    return path


def batch(recipients: Path, template: Path, *args: str) -> tuple[int, str]:
    return invoke(
        "batch",
        str(recipients),
        *("--template", str(template), "--from", "shop@example.com"),
        *("--report", str(recipients.with_name("report.csv")), *args),
    )


def test_batch_outbox_twice_enqueues_each_row_once(
    tmp_path: Path, recipients: Path, template: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    code, output = batch(recipients, template, "--outbox", url, "--batch-id", "spring")
    assert code == 0, output
    warning = "warning: 1 row repeats an earlier row's address: row 3 Ann@Example.com (as row 1)"
    assert output == f"{warning}\nenqueued 3 into {url} (batch spring): 0 already there\n"
    code, output = batch(recipients, template, "--outbox", url)  # (the id is remembered)
    assert code == 0, output
    assert output == f"{warning}\nenqueued 0 into {url} (batch spring): 3 already there\n"
    entries = all_entries(url)
    assert sorted(e.key for e in entries) == [
        "batch:spring:ann@example.com:1",
        "batch:spring:ann@example.com:2",
        "batch:spring:bob@example.com:1",
    ]
    assert all(e.state is OutboxState.QUEUED for e in entries)
    assert not journal_path(recipients.with_name("report.csv")).exists()


def test_a_batch_enqueued_into_an_outbox_is_not_sent_directly(
    tmp_path: Path, recipients: Path, template: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    assert batch(recipients, template, "--outbox", url)[0] == 0
    code, output = batch(recipients, template, "--url", "smtp://127.0.0.1:1")
    assert code == 2
    assert "this batch was enqueued into an outbox" in output


def test_batch_outbox_resuming_a_direct_run_skips_who_it_reached(
    tmp_path: Path, recipients: Path, template: Path
) -> None:
    report = recipients.with_name("report.csv")
    with Journal(journal_path(report)) as journal:
        journal.finished(ReportRow(row=1, email="ann@example.com", status="delivered"))
        journal.started(2, "bob@example.com")  # (maybe delivered: not enqueued)
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    code, output = batch(recipients, template, "--outbox", url)
    assert code == 2
    assert "this batch was sent without --outbox" in output
    code, output = batch(recipients, template, "--outbox", url, "--resume", str(report))
    assert code == 0, output
    assert output.endswith("0 already there, 2 sent by an earlier run\n")
    [entry] = all_entries(url)
    assert entry.key.endswith(":ann@example.com:2")


@pytest.mark.parametrize(
    "command",
    [["worker"], ["outbox"], *(["outbox", c] for c in ("status", "list", "retry", "purge"))],
)
def test_outbox_commands_have_help(command: list[str]) -> None:
    code, output = invoke(*command, "--help")
    assert code == 0
    assert "Usage: " in output


def test_a_mistyped_sqlite_path_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "mail.db"  # never created: status must not make an empty outbox
    code, output = invoke("outbox", "status", "--outbox", f"sqlite:///{path}")
    assert code == 2
    assert output.startswith(f"error: no outbox at sqlite:///{path}: ")
    assert "four slashes" in output
    assert not path.exists()
