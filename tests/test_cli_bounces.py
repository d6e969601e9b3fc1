"""``asyncmail bounces``: a Maildir, an mbox or a message file in, a CSV and a summary out."""

from __future__ import annotations

import csv
import mailbox
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from asyncmail.cli._app import cli
from asyncmail.cli._bounces import COLUMNS

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
NAMES = sorted(path.name for path in FIXTURES.glob("*.eml"))
VERP = "bounces+{local}={domain}@example.com"
# 13 messages: 11 bounces with 13 recipients (8 hard: postfix bob, gmail, outlook, qmail
# heidi, exim, yahoo, exchange text, qq; soft: postfix carol, postfix delayed, ses, qmail
# ivan; one complaint), 2 not bounces.
SUMMARY = (
    "read 13 messages: 11 bounces (13 recipients: 8 hard, 4 soft, 1 complaints, 0 other), "
    "2 not bounces"
)


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    folder = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True)
    for number, name in enumerate(NAMES):
        target = folder / ("new" if number % 2 else "cur") / f"{number}.host:2,S"
        shutil.copy(FIXTURES / name, target)
    return folder


@pytest.fixture
def mbox(tmp_path: Path) -> Path:
    path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(path)
    for name in NAMES:
        box.add((FIXTURES / name).read_bytes())
    box.close()
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def rows(report: Path) -> list[dict[str, str]]:
    with report.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def test_a_maildir_gives_one_row_per_bounced_recipient_and_a_summary(
    maildir: Path, tmp_path: Path
) -> None:
    report = tmp_path / "bounces.csv"
    code, out, err = run("bounces", str(maildir), "--report", str(report))
    assert (code, err) == (0, "")
    assert out.strip() == f"{SUMMARY}; wrote {report}"
    table = rows(report)
    assert len(table) == 13
    hard = sorted(row["recipient"] for row in table if row["hard"] == "true")
    assert hard == [
        "bob+news@example.org",
        "erin@example.org",
        "frank@example.org",
        "heidi@example.net",
        "judy@example.org",
        "kim@example.net",
        "leo@corp.example.net",
        "mei@example.cn",
    ]
    assert {row["hard"] for row in table} == {"true", "false"}
    assert all(row["source"].startswith(str(maildir)) for row in table)


def test_a_row_carries_status_diagnostic_message_id_and_kind(maildir: Path, tmp_path: Path) -> None:
    report = tmp_path / "bounces.csv"
    assert run("bounces", str(maildir), "--report", str(report))[0] == 0
    (gmail,) = [row for row in rows(report) if row["recipient"] == "erin@example.org"]
    assert gmail["action"] == "failed"
    assert gmail["status"] == "5.1.1"
    assert gmail["diagnostic"].startswith("550-5.1.1 The email account that you tried to reach")
    assert gmail["message_id"] == "<welcome-erin@example.com>"
    assert gmail["verp_recipient"] == ""
    assert gmail["kind"] == "dsn"
    (complaint,) = [row for row in rows(report) if row["action"] == "complained"]
    assert (complaint["recipient"], complaint["hard"], complaint["kind"]) == (
        "nina@example.net",
        "false",
        "arf",
    )


def test_an_mbox_gives_the_same_rows_as_the_maildir(
    maildir: Path, mbox: Path, tmp_path: Path
) -> None:
    from_maildir, from_mbox = tmp_path / "a.csv", tmp_path / "b.csv"
    assert run("bounces", str(maildir), "--report", str(from_maildir))[0] == 0
    code, out, _ = run("bounces", str(mbox), "--report", str(from_mbox))
    assert code == 0
    assert out.startswith(SUMMARY)

    def key(row: dict[str, str]) -> tuple[str, ...]:
        return tuple(value for name, value in row.items() if name != "source")

    assert sorted(map(key, rows(from_maildir))) == sorted(map(key, rows(from_mbox)))
    assert rows(from_mbox)[0]["source"] == f"{mbox}#1"


def test_verp_fills_the_verp_recipient_column(mbox: Path, tmp_path: Path) -> None:
    report = tmp_path / "bounces.csv"
    assert run("bounces", str(mbox), "--report", str(report), "--verp", VERP)[0] == 0
    decoded = {row["recipient"]: row["verp_recipient"] for row in rows(report)}
    assert decoded["erin@example.org"] == "erin@example.org"
    assert decoded["judy@example.org"] == "judy@example.org"
    assert decoded["leo@corp.example.net"] == ""


def test_several_paths_and_a_single_message_file_are_read(mbox: Path, tmp_path: Path) -> None:
    report = tmp_path / "bounces.csv"
    code, out, _ = run("bounces", str(mbox), str(FIXTURES / "exim.eml"), "--report", str(report))
    assert code == 0
    assert out.startswith("read 14 messages: 12 bounces")
    assert rows(report)[-1]["source"] == str(FIXTURES / "exim.eml")


def test_an_empty_mbox_gives_an_empty_report(tmp_path: Path) -> None:
    empty, report = tmp_path / "empty.mbox", tmp_path / "bounces.csv"
    empty.touch()
    code, out, _ = run("bounces", str(empty), "--report", str(report))
    assert code == 0
    assert out.startswith("read 0 messages: 0 bounces")
    assert rows(report) == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing", "no such file or folder"),
        (lambda tmp: tmp, "not a Maildir"),
        (lambda tmp: _write(tmp / "data.bin", b"\x00\x01\x02 binary"), "neither an mbox"),
    ],
)
def test_a_path_that_is_no_mailbox_is_a_usage_error(
    tmp_path: Path, make: object, message: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    report = tmp_path / "out.csv"
    code, out, err = run("bounces", str(path), "--report", str(report))
    assert code == 2
    assert message in err
    assert out == ""
    assert not report.exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_bad_verp_template_is_a_usage_error(mbox: Path, tmp_path: Path) -> None:
    code, _, err = run("bounces", str(mbox), "--verp", "bounces@example.com")
    assert code == 2
    assert "VERP template" in err


def test_an_unwritable_report_is_a_usage_error(mbox: Path, tmp_path: Path) -> None:
    code, _, err = run("bounces", str(mbox), "--report", str(tmp_path / "no" / "such.csv"))
    assert code == 2
    assert "cannot write" in err


def test_a_maildir_file_that_vanishes_is_skipped_with_a_note(maildir: Path, tmp_path: Path) -> None:
    (maildir / "cur" / "gone.host:2,S").symlink_to(tmp_path / "nowhere")
    report = tmp_path / "bounces.csv"
    code, out, err = run("bounces", str(maildir), "--report", str(report))
    assert code == 0
    assert "1 unreadable" in out
    assert "skipped" in err
