"""``batch --resume`` after the list was edited: recipients are recognised by address, not row.

Every test runs a real batch against a capture server, edits the recipient list, resumes, and
counts the copies each address received.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncmail.testing import CaptureServer, Fault

from ._cli import SENDER, copies, invoke, read_report, write_csv


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer().run_in_thread() as running:
        yield running


@pytest.fixture
def template(tmp_path: Path) -> Path:
    folder = tmp_path / "template"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hello {{ name }}\n", encoding="utf-8")
    (folder / "body.txt").write_text("Dear {{ name }}, code {{ code }}\n", "utf-8")
    return folder


def rows(*names: str) -> list[tuple[str, str, str]]:
    """One row per name: ``ann`` becomes ``ann@example.com,Ann,code-ann``."""
    return [(f"{n}@example.com", n.title(), f"code-{n}") for n in names]


def run(server: CaptureServer, template: Path, recipients: Path, *extra: str) -> tuple[int, str]:
    return invoke(
        *("batch", str(recipients), "-t", str(template), "--from", SENDER, "--url", server.url),
        *("--no-progress", "--attempts", "1"),
        *extra,
    )


def fail_once(server: CaptureServer, email: str) -> None:
    """The next send to ``email`` is refused (550), later ones go through."""
    server.inject(Fault.reply("rcpt", 550, "5.1.1 Not today", match=f"<{email}>", times=1))


def report_by_email(report: Path) -> dict[str, list[str]]:
    """Each address of the report with the statuses of its lines."""
    by_email: dict[str, list[str]] = collections.defaultdict(list)
    for line in read_report(report):
        by_email[line["email"]].append(line["status"])
    return dict(by_email)


def test_resume_after_deleting_a_row_sends_no_second_copy(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    recipients = write_csv(tmp_path / "r.csv", rows("ann", "bo", "cy", "di", "ed"))
    report = tmp_path / "report.csv"
    fail_once(server, "cy@example.com")
    code, output = run(server, template, recipients, "--report", str(report))
    assert code == 1, output
    assert copies(server) == {f"{n}@example.com": 1 for n in ("ann", "bo", "di", "ed")}

    write_csv(recipients, rows("ann", "cy", "di", "ed"))  # bo deleted: later rows move up
    code, output = run(server, template, recipients, "--resume", str(report))
    assert code == 0, output
    assert copies(server) == {f"{n}@example.com": 1 for n in ("ann", "bo", "cy", "di", "ed")}
    # bo left the list but was delivered: the report keeps it, once.
    assert report_by_email(report) == {
        f"{n}@example.com": ["delivered"] for n in ("ann", "bo", "cy", "di", "ed")
    }


def test_resume_after_inserting_a_row_sends_only_the_new_row(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    recipients = write_csv(tmp_path / "r.csv", rows("ann", "bo", "cy"))
    report = tmp_path / "report.csv"
    assert run(server, template, recipients, "--report", str(report))[0] == 0

    write_csv(recipients, rows("ann", "new", "bo", "cy"))  # later rows move down
    code, output = run(server, template, recipients, "--resume", str(report))
    assert code == 0, output
    assert copies(server) == {f"{n}@example.com": 1 for n in ("ann", "new", "bo", "cy")}
    [new] = [m for m in server.messages if m.recipients == ("new@example.com",)]
    assert "code-new" in new.parsed.get_content()
    lines = read_report(report)
    assert sorted((r["email"], r["status"]) for r in lines) == [
        (f"{n}@example.com", "delivered") for n in ("ann", "bo", "cy", "new")
    ]
    assert {r["email"]: r["row"] for r in lines}["new@example.com"] == "2"


def test_resume_after_reordering_rows_sends_only_what_was_missing(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    recipients = write_csv(tmp_path / "r.csv", rows("ann", "bo", "cy", "di"))
    report = tmp_path / "report.csv"
    fail_once(server, "bo@example.com")
    assert run(server, template, recipients, "--report", str(report))[0] == 1

    write_csv(recipients, rows("di", "cy", "bo", "ann"))
    code, output = run(server, template, recipients, "--resume", str(report))
    assert code == 0, output
    assert copies(server) == {f"{n}@example.com": 1 for n in ("ann", "bo", "cy", "di")}
    assert report_by_email(report) == {
        f"{n}@example.com": ["delivered"] for n in ("ann", "bo", "cy", "di")
    }


def test_an_address_listed_twice_is_two_recipients_across_edits(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    """Its first and second rows keep apart when rows of other addresses come and go."""
    twice = [
        ("ann@example.com", "Ann", "first-order"),
        ("ann@example.com", "Ann", "second-order"),
    ]
    recipients = write_csv(tmp_path / "r.csv", [*rows("zed"), *twice, *rows("bo")])
    report = tmp_path / "report.csv"
    server.inject(Fault.reply("dot", 451, "4.3.0 Try later", match="second-order", times=1))
    assert run(server, template, recipients, "--report", str(report))[0] == 1
    assert copies(server) == {"zed@example.com": 1, "ann@example.com": 1, "bo@example.com": 1}

    write_csv(recipients, [*twice, *rows("bo")])  # zed deleted
    code, output = run(server, template, recipients, "--resume", str(report))
    assert code == 0, output
    bodies = sorted(
        m.parsed.get_content().split("code ")[1].strip()
        for m in server.messages
        if m.recipients == ("ann@example.com",)
    )
    assert bodies == ["first-order", "second-order"]
    assert copies(server) == {"zed@example.com": 1, "ann@example.com": 2, "bo@example.com": 1}
    assert report_by_email(report) == {
        "zed@example.com": ["delivered"],
        "ann@example.com": ["delivered", "delivered"],
        "bo@example.com": ["delivered"],
    }


def test_an_edited_row_of_a_delivered_address_is_not_sent_again(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    """The address, not the row's content, says who already got the mail."""
    recipients = write_csv(tmp_path / "r.csv", rows("ann", "bo"))
    report = tmp_path / "report.csv"
    assert run(server, template, recipients, "--report", str(report))[0] == 0

    write_csv(recipients, [("ANN@example.com", "Ann Lee", "code-fixed"), *rows("bo", "cy")])
    code, output = run(server, template, recipients, "--resume", str(report))
    assert code == 0, output
    assert copies(server) == {f"{n}@example.com": 1 for n in ("ann", "bo", "cy")}


def test_a_journal_of_the_old_row_numbered_format_is_refused_not_misread(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    recipients = write_csv(tmp_path / "r.csv", rows("ann", "bo"))
    journal = tmp_path / "report.csv.journal"
    old = "# asyncmail journal v1\nD 1 ann@example.com\t250\t2.0.0\t1\t<x@y>\tOK\n"
    journal.write_text(old, encoding="utf-8")
    code, output = run(server, template, recipients, "--resume", str(tmp_path / "report.csv"))
    assert code == 2, output
    assert "journal v1" in output
    assert "Traceback" not in output
    assert server.messages == []
    assert journal.read_text(encoding="utf-8") == old
