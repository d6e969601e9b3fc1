"""The write-ahead journal: replayable after a kill, and the report is rebuilt from it."""

import csv
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from asyncmail.batch._journal import (
    REPORT_COLUMNS,
    Journal,
    JournalState,
    ReportRow,
    in_flight_rows,
    journal_path,
    write_report,
)


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_journal_lives_next_to_the_report(tmp_path: Path) -> None:
    assert journal_path(tmp_path / "report.csv") == tmp_path / "report.csv.journal"


def test_every_line_is_on_disk_as_soon_as_it_is_written(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.started(1, "a@example.com")
    # Read through another file object while the journal is still open, as a resumed run
    # would after a kill -9.
    assert (tmp_path / "j").read_text().splitlines()[1:] == ["S 1 a@example.com"]
    journal.close()


def test_replay_gives_the_last_event_of_each_row_for_that_address(tmp_path: Path) -> None:
    with Journal(tmp_path / "j") as journal:
        journal.started(1, "a@example.com")
        journal.finished(ReportRow(row=1, email="a@example.com", status="delivered"))
        journal.started(2, "b@example.com")
        journal.finished(ReportRow(row=3, email="c@example.com", status="failed"))
    state = JournalState.replay(tmp_path / "j")
    assert state.last(1, "a@example.com") == "D"
    assert state.last(2, "b@example.com") == "S"
    assert state.last(3, "c@example.com") == "F"
    assert state.last(1, "other@example.com") is None  # the list changed: another recipient
    assert state.last(99, "a@example.com") is None
    assert in_flight_rows(tmp_path / "j") == [(2, "b@example.com")]


def test_a_line_cut_short_by_a_kill_is_ignored_and_the_next_run_appends_cleanly(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    with Journal(path) as journal:
        journal.started(1, "a@example.com")
    with path.open("a") as f:
        f.write("D 1 a@exa")  # killed in the middle of the write
    assert JournalState.replay(path).last(1, "a@example.com") == "S"
    with Journal(path) as journal:
        journal.finished(ReportRow(row=1, email="a@example.com", status="unknown"))
    assert JournalState.replay(path).last(1, "a@example.com") == "U"


def test_report_has_one_row_per_recipient_with_its_last_outcome(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with Journal(path) as journal:
        journal.started(1, "a@example.com")
        journal.finished(
            ReportRow(
                row=1,
                email="a@example.com",
                status="failed",
                smtp_code=451,
                enhanced_code="4.3.0",
                reply="4.3.0 try\tlater\nplease \\ now",
                attempts=3,
            )
        )
        journal.started(2, "b@example.com")  # in flight when the run stopped
        journal.started(1, "a@example.com")  # a resumed run retries the failure
        journal.finished(
            ReportRow(
                row=1,
                email="a@example.com",
                status="delivered",
                smtp_code=250,
                enhanced_code="2.0.0",
                reply="2.0.0 OK",
                message_id="<x@example.com>",
                attempts=1,
            )
        )
        journal.finished(
            ReportRow(row=3, email="bad", status="failed", reply="invalid email address: 'x y'")
        )
    counts = write_report(path, tmp_path / "report.csv")
    rows = read_report(tmp_path / "report.csv")
    assert list(rows[0]) == list(REPORT_COLUMNS)
    assert counts == {"delivered": 1, "failed": 1, "unknown": 1}
    by_row = {r["row"]: r for r in rows}
    assert len(rows) == 3
    assert by_row["1"] == {
        "row": "1",
        "email": "a@example.com",
        "status": "delivered",
        "smtp_code": "250",
        "enhanced_code": "2.0.0",
        "reply": "2.0.0 OK",
        "message_id": "<x@example.com>",
        "attempts": "1",
    }
    assert by_row["2"]["status"] == "unknown"
    assert "maybe delivered" in by_row["2"]["reply"]
    assert by_row["3"]["reply"] == "invalid email address: 'x y'"


@given(st.text())
def test_any_server_reply_survives_the_journal_unchanged(reply: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "j"
        with Journal(path) as journal:
            journal.finished(ReportRow(row=1, email="a@example.com", status="failed", reply=reply))
        write_report(path, Path(tmp) / "r.csv")
        [row] = read_report(Path(tmp) / "r.csv")
    expected = reply.replace("\r\n", "\n").replace("\r", "\n")
    assert row["reply"].replace("\r\n", "\n").replace("\r", "\n") == expected
