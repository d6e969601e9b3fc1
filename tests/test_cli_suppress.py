"""``asyncmail suppress ...`` and ``batch --suppress``, end to end against a capture server."""

from __future__ import annotations

import asyncio
import collections
import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from asyncmail import CsvSuppressions, Outbox
from asyncmail.cli._app import cli
from asyncmail.testing import CaptureServer, Fault

SENDER = "Shop <shop@example.com>"
#: Once only: a second try of gone@ would be delivered, and seen.
GONE_FAULT = Fault.reply(
    "rcpt", 550, "5.1.1 <gone@example.com>: no such user", match="gone@", times=1
)


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer(faults=[GONE_FAULT]).run_in_thread() as running:
        yield running


@pytest.fixture
def template(tmp_path: Path) -> Path:
    folder = tmp_path / "template"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hello {{ name }}\n", encoding="utf-8")
    (folder / "body.txt").write_text("Dear {{ name }}\n", "utf-8")
    return folder


def write_recipients(path: Path, emails: Sequence[str]) -> Path:
    path.write_text("email,name\n" + "".join(f"{e},{e[:3]}\n" for e in emails), "utf-8")
    return path


def invoke(*args: str) -> tuple[int, str]:
    # (wide enough that a table's cells are not wrapped)
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"}, catch_exceptions=False)
    return result.exit_code, result.output


def report(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8", newline="") as f:
        return {row["email"]: row["status"] for row in csv.DictReader(f)}


def copies(server: CaptureServer) -> collections.Counter[str]:
    return collections.Counter(r for m in server.messages for r in m.recipients)


def batch(server: CaptureServer, template: Path, recipients: Path, *extra: str) -> tuple[int, str]:
    return invoke(
        *("batch", str(recipients), "-t", str(template), "--from", SENDER, "--url", server.url),
        *("--no-progress", "--attempts", "1"),
        *extra,
    )


EMAILS = ["ann@example.com", "bob@example.com", "gone@example.com", "cat@example.com"]


def test_a_batch_skips_suppressed_rows_adds_hard_bounces_and_resumes_with_the_list(
    server: CaptureServer, template: Path, tmp_path: Path
) -> None:
    listed = tmp_path / "suppressed.csv"
    code, output = invoke("suppress", "add", "--list", str(listed), "BOB@Example.com")
    assert (code, output.strip()) == (0, "added 1")
    recipients = write_recipients(tmp_path / "r.csv", EMAILS)
    rep = tmp_path / "report.csv"
    code, output = batch(
        server, template, recipients, "--report", str(rep), "--suppress", str(listed)
    )
    assert code == 1, output  # gone@ failed
    assert report(rep) == {
        "ann@example.com": "delivered",
        "bob@example.com": "suppressed",
        "gone@example.com": "failed",
        "cat@example.com": "delivered",
    }
    assert "suppressed=1" in output
    assert "added to the suppression list" in output
    assert copies(server) == {"ann@example.com": 1, "cat@example.com": 1}
    on_list = asyncio.run(CsvSuppressions(listed).suppressed(EMAILS))
    assert on_list == {"bob@example.com", "gone@example.com"}

    # resumed: the failed gone@ is now suppressed, and is not tried again
    code, output = batch(
        server, template, recipients, "--resume", str(rep), "--suppress", str(listed)
    )
    assert code == 0, output
    assert report(rep)["gone@example.com"] == "suppressed"
    assert copies(server) == {"ann@example.com": 1, "cat@example.com": 1}


def test_a_row_taken_off_the_list_is_sent_by_a_resumed_run(
    server: CaptureServer, template: Path, tmp_path: Path
) -> None:
    listed = tmp_path / "suppressed.csv"
    invoke("suppress", "add", "--list", str(listed), "bob@example.com", "--reason", "complaint")
    recipients = write_recipients(tmp_path / "r.csv", ["ann@example.com", "bob@example.com"])
    rep = tmp_path / "report.csv"
    code, _ = batch(server, template, recipients, "--report", str(rep), "--suppress", str(listed))
    assert code == 0
    code, output = invoke("suppress", "remove", "--list", str(listed), "BOB@example.com", "x@y.z")
    assert (code, output.strip()) == (0, "removed 1, 1 not listed")
    code, _ = batch(server, template, recipients, "--resume", str(rep), "--suppress", str(listed))
    assert code == 0
    assert report(rep) == {"ann@example.com": "delivered", "bob@example.com": "delivered"}
    assert copies(server) == {"ann@example.com": 1, "bob@example.com": 1}


def test_a_batch_can_use_an_outboxs_list(
    server: CaptureServer, template: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    invoke("suppress", "add", "--outbox", url, "ann@example.com")
    recipients = write_recipients(tmp_path / "r.csv", EMAILS)
    rep = tmp_path / "report.csv"
    code, output = batch(server, template, recipients, "--report", str(rep), "--suppress", url)
    assert code == 1, output
    assert report(rep)["ann@example.com"] == "suppressed"
    code, output = invoke("suppress", "list", "--outbox", url, "--csv")
    assert code == 0
    rows = list(csv.DictReader(output.splitlines()))
    assert [(r["address"], r["reason"], r["status"]) for r in rows] == [
        ("ann@example.com", "manual", ""),
        ("gone@example.com", "hard-bounce", "5.1.1"),
    ]
    assert rows[1]["source"] == "batch report.csv"
    assert rows[1]["diagnostic"] == "550 5.1.1 <gone@example.com>: no such user"


def test_a_bad_suppression_file_stops_the_batch_before_any_mail(
    server: CaptureServer, template: Path, tmp_path: Path
) -> None:
    listed = tmp_path / "suppressed.csv"
    listed.write_text("email\nann@example.com\n", encoding="utf-8")
    recipients = write_recipients(tmp_path / "r.csv", EMAILS)
    code, output = batch(server, template, recipients, "--suppress", str(listed))
    assert code == 2
    assert "line 1" in output and "not a suppression list" in output
    assert server.messages == []


def test_batch_into_an_outbox_leaves_suppressed_rows_out(template: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    invoke("suppress", "add", "--outbox", url, "bob@example.com")
    recipients = write_recipients(tmp_path / "r.csv", EMAILS)
    code, output = invoke(
        *("batch", str(recipients), "-t", str(template), "--from", SENDER),
        *("--outbox", url, "--suppress", url, "--report", str(tmp_path / "rep.csv")),
    )
    assert code == 0, output
    assert "enqueued 3" in output and "1 suppressed" in output
    code, output = invoke("outbox", "list", "--outbox", url, "--state", "failed")
    assert "failed (suppressed)" in output
    code, output = invoke("outbox", "list", "--outbox", url, "--state", "queued")
    assert output.count("queued") == 3


def test_outbox_status_shows_the_suppressed_recipients(tmp_path: Path) -> None:
    from asyncmail import Message

    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    invoke("suppress", "add", "--outbox", url, "bob@example.com")

    async def enqueue() -> None:
        async with Outbox(url, suppression=True) as outbox:
            msg = Message(sender=SENDER, to=["ann@example.com", "bob@example.com"], text="hi")
            await outbox.enqueue(msg, key="k1")

    asyncio.run(enqueue())
    code, output = invoke("outbox", "status", "--outbox", url, "--key", "k1")
    assert code == 0
    assert "suppressed:   bob@example.com" in output
    assert "pending:      ann@example.com" in output
    code, output = invoke("outbox", "status", "--outbox", url, "--key", "k1", "--json")
    assert '"suppressed": [\n    "bob@example.com"\n  ]' in output


BOUNCES = """\
source,recipient,action,status,diagnostic,message_id,verp_recipient,hard,kind
mbox:1,gone@example.com,failed,5.1.1,"smtp; 550 5.1.1 no such user",<a@x>,,true,dsn
mbox:2,whatever@relay.example,failed,5.1.1,550 5.1.1 unknown,<b@x>,real@example.com,true,dsn
mbox:3,full@example.com,delayed,4.2.2,mailbox full,<c@x>,,false,dsn
mbox:4,angry@example.com,,,,<d@x>,,false,arf
mbox:5,vacation@example.com,,,,,,false,auto-reply
mbox:6,GONE@example.com,failed,5.1.1,again,<e@x>,,true,dsn
"""


@pytest.mark.parametrize("where", ["list", "outbox"])
def test_import_adds_the_hard_bounces_and_complaints_of_a_bounce_report(
    tmp_path: Path, where: str
) -> None:
    bounces = tmp_path / "bounces.csv"
    bounces.write_text(BOUNCES, encoding="utf-8")
    target = str(tmp_path / "s.csv") if where == "list" else f"sqlite:///{tmp_path / 'o.db'}"
    code, output = invoke("suppress", "import", f"--{where}", target, str(bounces))
    assert code == 0, output
    assert output.strip() == (
        f"imported 3 new: 3 hard bounces, 1 complaint in {bounces}; 1 already listed; "
        "2 other rows skipped"
    )
    code, output = invoke("suppress", "list", f"--{where}", target, "--csv")
    rows = {r["address"]: r for r in csv.DictReader(output.splitlines())}
    assert rows.keys() == {"gone@example.com", "real@example.com", "angry@example.com"}
    assert rows["angry@example.com"]["reason"] == "complaint"
    assert rows["real@example.com"]["reason"] == "hard-bounce"
    assert rows["real@example.com"]["status"] == "5.1.1"
    assert rows["gone@example.com"]["source"] == "bounces:mbox:1"
    code, output = invoke("suppress", "list", f"--{where}", target)
    assert "3 addresses suppressed" in output


def test_import_refuses_a_file_that_is_not_a_bounce_report(tmp_path: Path) -> None:
    bounces = tmp_path / "bounces.csv"
    bounces.write_text("email\nann@example.com\n", encoding="utf-8")
    code, output = invoke("suppress", "import", "--list", str(tmp_path / "s.csv"), str(bounces))
    assert code == 2
    assert "not a bounce report" in output
    assert not (tmp_path / "s.csv").exists()


def test_the_list_must_be_named_once(tmp_path: Path) -> None:
    code, output = invoke("suppress", "list")
    assert code == 2 and "--list FILE.csv or --outbox URL" in output
    code, output = invoke(
        "suppress", "list", "--list", str(tmp_path / "a.csv"), "--outbox", "sqlite:///x.db"
    )
    assert code == 2


def test_a_missing_outbox_is_not_created_by_list(tmp_path: Path) -> None:
    code, output = invoke("suppress", "list", "--outbox", f"sqlite:///{tmp_path / 'typo.db'}")
    assert code == 2 and "does not exist" in output
    assert not (tmp_path / "typo.db").exists()


def test_add_refuses_a_non_address(tmp_path: Path) -> None:
    code, output = invoke("suppress", "add", "--list", str(tmp_path / "s.csv"), "ann")
    assert code == 2 and "not an email address" in output


def test_a_worker_with_suppress_adds_a_recipient_refused_as_unknown(tmp_path: Path) -> None:
    import signal

    from asyncmail import Message

    from .test_cli_worker import PATIENCE, Worker, counts, wait_for

    url = f"sqlite:///{tmp_path / 'outbox.db'}"

    async def enqueue() -> None:
        async with Outbox(url) as outbox:
            msg = Message(sender=SENDER, to=["ann@example.com", "gone@example.com"], text="hi")
            await outbox.enqueue(msg, key="k1")

    asyncio.run(enqueue())
    with CaptureServer(faults=[GONE_FAULT]).run_in_thread() as server:
        worker = Worker("--outbox", url, "--url", server.url, "--suppress")
        try:
            worker.wait_for_line(r"^worker .*: delivering ")
            server.wait_for_messages_sync(1, timeout=PATIENCE)
            wait_for(lambda: counts(url) == {"delivered": 1}, "delivered")
            worker.signal(signal.SIGTERM)
            code, output = worker.finish()
        finally:
            worker.kill()
    assert code == 0, output
    code, output = invoke("suppress", "list", "--outbox", url, "--csv")
    [row] = list(csv.DictReader(output.splitlines()))
    assert (row["address"], row["reason"], row["status"]) == (
        "gone@example.com",
        "hard-bounce",
        "5.1.1",
    )
    assert row["source"].startswith("worker ")
