"""The suppression list: the CSV file, the outbox's store (SQLite and a real redis-server,
one contract), how addresses match, and which refusals count as hard bounces."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncmail import ConfigError, CsvSuppressions, Outbox, Suppression, Suppressions
from asyncmail._exceptions import (
    Phase,
    Rejected,
    SendResult,
    Status,
    TemporaryFailure,
)
from asyncmail.suppression._model import hard_bounces, normalize

WHEN = datetime(2026, 12, 2, 5, 43, 55, tzinfo=UTC)


def entry(address: str, reason: str = "hard-bounce", **fields: str) -> Suppression:
    return Suppression(address=address, reason=reason, added_at=WHEN, **fields)


@pytest.fixture(params=["csv", "sqlite", "redis"])
async def suppressions(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Suppressions]:
    """Each implementation of the list, fresh."""
    if request.param == "csv":
        yield CsvSuppressions(tmp_path / "suppressed.csv")
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/outbox.db"
    else:
        url = request.getfixturevalue("redis_url")
    async with Outbox(url) as outbox:
        yield outbox.suppressions


async def _all(suppressions: Suppressions) -> list[Suppression]:
    return [e async for e in suppressions.entries()]


# -- the contract, over the CSV file and both stores -------------------------------------


async def test_an_added_address_is_suppressed_and_others_are_not(
    suppressions: Suppressions,
) -> None:
    assert await suppressions.add([entry("ann@example.com", status="5.1.1")]) == 1
    found = await suppressions.suppressed(["ann@example.com", "bob@example.com"])
    assert found == {"ann@example.com"}


async def test_matching_ignores_case_and_the_form_of_an_international_domain(
    suppressions: Suppressions,
) -> None:
    await suppressions.add([entry("Ann@Bücher.Example"), entry("ZOE@example.com")])
    asked = ["ann@xn--bcher-kva.example", "ANN@BÜCHER.example", "zoe@EXAMPLE.com", "zo@e.com"]
    assert await suppressions.suppressed(asked) == set(asked[:3])


async def test_adding_an_address_already_listed_keeps_the_first_entry(
    suppressions: Suppressions,
) -> None:
    assert await suppressions.add([entry("ann@example.com", diagnostic="first")]) == 1
    again = [entry("ANN@example.com", "complaint"), entry("bob@example.com")]
    assert await suppressions.add(again) == 1
    listed = {e.address.lower(): e for e in await _all(suppressions)}
    assert listed.keys() == {"ann@example.com", "bob@example.com"}
    assert listed["ann@example.com"].diagnostic == "first"
    assert listed["ann@example.com"].reason == "hard-bounce"


async def test_entries_come_back_whole(suppressions: Suppressions) -> None:
    added = entry(
        "ann@example.com",
        status="5.1.1",
        diagnostic="550 5.1.1 <ann@example.com>: no such user, here",
        source="worker h:1",
    )
    await suppressions.add([added])
    [back] = await _all(suppressions)
    assert back == added


async def test_a_removed_address_is_no_longer_suppressed(suppressions: Suppressions) -> None:
    await suppressions.add([entry("ann@example.com"), entry("bob@example.com")])
    assert await suppressions.remove(["ANN@example.com", "nobody@example.com"]) == 1
    assert await suppressions.suppressed(["ann@example.com", "bob@example.com"]) == {
        "bob@example.com"
    }
    assert [e.address for e in await _all(suppressions)] == ["bob@example.com"]


async def test_an_empty_list_suppresses_nothing(suppressions: Suppressions) -> None:
    assert await suppressions.suppressed(["ann@example.com"]) == set()
    assert await suppressions.suppressed([]) == set()
    assert await suppressions.add([]) == 0
    assert await suppressions.remove([]) == 0
    assert await _all(suppressions) == []


# -- the CSV file ---------------------------------------------------------------------------


async def test_the_csv_file_is_created_by_the_first_add_and_read_back_by_a_new_list(
    tmp_path: Path,
) -> None:
    path = tmp_path / "suppressed.csv"
    first = CsvSuppressions(path)
    assert await first.suppressed(["ann@example.com"]) == set()
    assert not path.exists()
    await first.add([entry("ann@example.com", diagnostic='550 "quoted", with comma')])
    await first.add([entry("bob@example.com", "unsubscribed")])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "address,reason,status,diagnostic,added_at,source"
    assert len(lines) == 3
    again = CsvSuppressions(path)
    assert await again.suppressed(["ANN@example.com", "bob@example.com", "c@example.com"]) == {
        "ANN@example.com",
        "bob@example.com",
    }
    assert {e.diagnostic for e in await _all(again)} == {'550 "quoted", with comma', ""}


async def test_a_remove_rewrites_the_file_keeping_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "suppressed.csv"
    lst = CsvSuppressions(path)
    await lst.add([entry("ann@example.com"), entry("bob@example.com")])
    path.chmod(0o644)
    await lst.remove(["ann@example.com"])
    assert path.stat().st_mode & 0o777 == 0o644
    assert [e.address for e in await _all(CsvSuppressions(path))] == ["bob@example.com"]
    assert sorted(os.listdir(tmp_path)) == ["suppressed.csv"]  # no temporary file left


async def test_an_append_after_a_row_cut_short_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "suppressed.csv"
    path.write_text(
        "address,reason,status,diagnostic,added_at,source\n"
        "ann@example.com,manual,,,2026-12-02T05:43:55+00:00,me",
        encoding="utf-8",
    )
    await CsvSuppressions(path).add([entry("bob@example.com")])
    assert {e.address for e in await _all(CsvSuppressions(path))} == {
        "ann@example.com",
        "bob@example.com",
    }


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("email,why\nann@example.com,x\n", 1, "header"),
        (
            "address,reason,status,diagnostic,added_at,source\n"
            "ann@example.com,manual,,,2026-12-02T05:43:55+00:00,me\n"
            "bob@example.com,manual,,\n",
            3,
            "4 fields, expected 6",
        ),
        (
            "address,reason,status,diagnostic,added_at,source\n"
            "ann@example.com,because,,,2026-12-02T05:43:55+00:00,me\n",
            2,
            "reason must be one of",
        ),
        (
            "address,reason,status,diagnostic,added_at,source\n"
            "ann@example.com,manual,,,yesterday,me\n",
            2,
            "yesterday",
        ),
        (
            "address,reason,status,diagnostic,added_at,source\n"
            "ann@example.com,manual,,,2026-12-02T05:43:55,me\n",
            2,
            "timezone-aware",
        ),
        (
            "address,reason,status,diagnostic,added_at,source\n"
            "not-an-address,manual,,,2026-12-02T05:43:55+00:00,me\n",
            2,
            "not an email address",
        ),
    ],
)
async def test_a_malformed_file_is_refused_naming_its_line(
    tmp_path: Path, text: str, line: int, says: str
) -> None:
    path = tmp_path / "suppressed.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=f"line {line}: .*{says}"):
        await CsvSuppressions(path).suppressed(["ann@example.com"])
    with pytest.raises(ConfigError, match=f"line {line}"):
        await CsvSuppressions(path).add([entry("zed@example.com")])
    assert path.read_text(encoding="utf-8") == text  # nothing was written to it


async def test_a_list_in_a_missing_folder_says_it_cannot_be_written(tmp_path: Path) -> None:
    lst = CsvSuppressions(tmp_path / "nowhere" / "suppressed.csv")
    with pytest.raises(ConfigError, match="cannot write the suppression list"):
        await lst.add([entry("ann@example.com")])


# -- addresses and entries ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "normal"),
    [
        ("Ann@Example.COM", "ann@example.com"),
        (" <ann@example.com> ", "ann@example.com"),
        ("ann@Bücher.example", "ann@xn--bcher-kva.example"),
        ("用户@例え.jp", "用户@xn--r8jz45g.jp"),
        ('"a@b"@example.com', '"a@b"@example.com'),
        ("ann@[192.0.2.1]", "ann@[192.0.2.1]"),
        ("ann@not_a_host!", "ann@not_a_host!"),
    ],
)
def test_normalize(address: str, normal: str) -> None:
    assert normalize(address) == normal


@pytest.mark.parametrize("address", ["", "ann", "@example.com", "ann@", 42])
def test_a_non_address_is_refused(address: object) -> None:
    with pytest.raises(ConfigError):
        normalize(address)  # type: ignore[arg-type]


@given(st.emails())
def test_normalizing_is_idempotent_and_case_blind(address: str) -> None:
    once = normalize(address)
    assert normalize(once) == once
    assert normalize(address.upper()) == normalize(address.lower()) == once


def test_an_entry_is_validated_and_kept_on_one_line() -> None:
    with pytest.raises(ConfigError, match="reason"):
        entry("ann@example.com", "bounced")
    with pytest.raises(ConfigError, match="timezone-aware"):
        Suppression(address="ann@example.com", added_at=datetime(2026, 1, 1))
    assert entry("ann@example.com", diagnostic="550 no\r\n such user").diagnostic == (
        "550 no such user"
    )
    now = Suppression.now("ann@example.com", "complaint", source="me")
    assert now.added_at.tzinfo is not None and now.reason == "complaint"


def _result(**refused: Rejected | TemporaryFailure) -> SendResult[None]:
    return SendResult(
        message=None,
        status=Status.FAILED,
        refused={k.replace("_", "@") + ".example": v for k, v in refused.items()},
    )


def test_only_a_permanent_5_1_x_refusal_at_rcpt_about_the_recipient_is_a_hard_bounce() -> None:
    rcpt = Phase.RCPT
    result = _result(
        gone_a=Rejected("5.1.1 No such user", code=550, phase=rcpt),
        domain_a=Rejected("5.1.2 Bad destination system", code=550, phase=rcpt),
        policy_a=Rejected("5.7.1 Refused by policy", code=550, phase=rcpt),
        bare_a=Rejected("No such user", code=550, phase=rcpt),
        sender_a=Rejected("5.1.8 Bad sender's system address", code=553, phase=rcpt),
        busy_a=TemporaryFailure("4.2.1 Mailbox busy", code=450, phase=rcpt),
        data_a=Rejected("5.1.1 No such user", code=550, phase=Phase.DATA),
    )
    found = hard_bounces(result, source="test")
    assert [(s.address, s.status) for s in found] == [
        ("gone@a.example", "5.1.1"),
        ("domain@a.example", "5.1.2"),
    ]
    assert found[0].diagnostic == "550 5.1.1 No such user"
    assert found[0].reason == "hard-bounce" and found[0].source == "test"
