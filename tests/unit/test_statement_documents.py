"""A statement as JSON fields, CSV (parsed back with csv) and PDF (read back with pypdf)."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pypdf import PdfReader

from banking_es.application.statements import Period, Statement, StatementLine
from banking_es.statements.documents import (
    LINE_FIELDS,
    negotiate,
    statement_csv,
    statement_dict,
)
from banking_es.statements.pdf import FONT_DIR, FONT_FILES, statement_pdf

ISSUED = datetime(2030, 2, 3, 9, 30, tzinfo=UTC)
JANUARY = Period(date(2030, 1, 1), date(2030, 1, 31))


def make_statement(
    count: int = 3, owner: str = "Ada Lovelace", description: str = "movement {i}"
) -> Statement:
    """`count` lines alternating +100.25 and -40.10 from an opening of 1,000.00."""
    balance = opening = Decimal("1000.00")
    lines = []
    at = datetime(2030, 1, 1, 8, tzinfo=UTC)
    for i in range(count):
        amount = Decimal("100.25") if i % 2 == 0 else Decimal("-40.10")
        balance += amount
        kind = "deposit" if amount > 0 else "transfer_out"
        reference = None if amount > 0 else f"tr-{i}"
        lines.append(
            StatementLine(
                at + timedelta(minutes=i),
                kind,
                description.format(i=i),
                amount,
                balance,
                reference,
                i + 2,
            )
        )
    total_in = sum((x.amount for x in lines if x.amount > 0), Decimal("0.00"))
    total_out = sum((x.amount for x in lines if x.amount < 0), Decimal("0.00"))
    return Statement(
        "3f1c6a4e-0000-4000-8000-000000000001",
        owner,
        "USD",
        JANUARY,
        opening,
        balance,
        total_in,
        total_out,
        tuple(lines),
    )


def pdf_pages(document: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(document)).pages]


# ---- JSON and CSV ------------------------------------------------------------------------


def test_the_json_fields_are_the_contracts_with_exact_amounts() -> None:
    body = statement_dict(make_statement(2))
    assert body == {
        "account_id": "3f1c6a4e-0000-4000-8000-000000000001",
        "currency": "USD",
        "from": "2030-01-01",
        "to": "2030-01-31",
        "opening_balance": "1000.00",
        "closing_balance": "1060.15",
        "total_in": "100.25",
        "total_out": "-40.10",
        "lines": [
            {
                "occurred_at": "2030-01-01T08:00:00Z",
                "type": "deposit",
                "description": "movement 0",
                "amount": "100.25",
                "balance_after": "1100.25",
                "reference": None,
            },
            {
                "occurred_at": "2030-01-01T08:01:00Z",
                "type": "transfer_out",
                "description": "movement 1",
                "amount": "-40.10",
                "balance_after": "1060.15",
                "reference": "tr-1",
            },
        ],
    }


def test_the_csv_parses_back_to_the_json_lines() -> None:
    statement = make_statement(5, description='line {i}, with "quotes"\nand a newline')
    rows = list(csv.reader(io.StringIO(statement_csv(statement).decode())))
    assert tuple(rows[0]) == LINE_FIELDS
    expected = [
        ["" if value is None else value for value in line.values()]
        for line in statement_dict(statement)["lines"]
    ]
    assert rows[1:] == expected
    assert [Decimal(row[3]) for row in rows[1:]] == [line.amount for line in statement.lines]


def test_an_empty_period_is_a_csv_of_its_header_only() -> None:
    empty = Statement("a", "Ada", "USD", JANUARY, *[Decimal("5.00")] * 2, *[Decimal(0)] * 2, ())
    assert statement_csv(empty) == (",".join(LINE_FIELDS) + "\r\n").encode()


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t"])
def test_a_description_that_a_spreadsheet_would_run_is_defused(start: str) -> None:
    statement = make_statement(1, description=start + "HYPERLINK(1)")
    rows = list(csv.reader(io.StringIO(statement_csv(statement).decode())))
    assert rows[1][2] == "'" + start + "HYPERLINK(1)"
    assert statement_dict(statement)["lines"][0]["description"] == start + "HYPERLINK(1)"


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "json"),
        ("", "json"),
        ("*/*", "json"),
        ("application/json", "json"),
        ("text/csv", "csv"),
        ("TEXT/CSV; charset=utf-8", "csv"),
        ("text/*", "csv"),
        ("application/pdf", "pdf"),
        ("application/pdf;q=0.9, text/csv;q=0.5", "pdf"),
        ("application/pdf;q=0, */*", "json"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "json"),
        ("text/html", None),
        ("image/png, application/xml", None),
        ("not a media type", None),
        ("a/b/c", None),
    ],
)
def test_the_format_follows_accept(accept: str | None, chosen: str | None) -> None:
    assert negotiate(accept) == chosen


# ---- PDF ---------------------------------------------------------------------------------


def test_the_pdf_names_bank_account_period_totals_and_pages() -> None:
    statement = make_statement(3)
    [text] = pdf_pages(statement_pdf(statement, bank_name="Banque Étoile", generated_at=ISSUED))
    for expected in (
        "Banque Étoile",
        "3f1c6a4e-0000-4000-8000-000000000001",
        "Ada Lovelace",
        "2030-01-01 to 2030-01-31",
        "Opening balance",
        "1,000.00 USD",
        "Money in",
        "200.50 USD",
        "Money out",
        "-40.10 USD",
        "Closing balance",
        "1,160.40 USD",
        "Date (UTC)",
        "Deposit: movement 0",
        "+100.25 USD",
        "Transfer out: movement 1",
        "2030-01-01 08:02:00",
        "Page 1 of 1",
    ):
        assert expected in text, expected
    assert "Provisional" not in text


def test_a_long_statement_runs_over_pages_each_with_headings_and_its_number() -> None:
    statement = make_statement(400)
    started = time.perf_counter()
    document = statement_pdf(statement, bank_name="banking-es", generated_at=ISSUED)
    elapsed = time.perf_counter() - started
    pages = pdf_pages(document)
    assert len(pages) > 5
    for number, text in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in text
        assert "Date (UTC)" in text
        assert "banking-es" in text
    everything = "\n".join(pages)
    for i in range(400):
        assert f"movement {i}" in everything.replace("\n", " ")
    assert pages[0].count("Opening balance") == 2  # the summary and the table's first row
    assert "Total money in" in pages[-1]
    assert elapsed < 20  # a loose bound against a quadratic layout (docs/performance.md)


def test_names_in_other_scripts_print_as_written_and_missing_glyphs_as_question_marks() -> None:
    assert all((FONT_DIR / name).is_file() for name in FONT_FILES.values()), (
        "Debian's fonts-dejavu-core must be installed (the Dockerfile installs it)"
    )
    statement = make_statement(1, owner="Ζωή Ёлкина-Øster", description="за кофе ☕ 王")
    [text] = pdf_pages(statement_pdf(statement, bank_name="Банк", generated_at=ISSUED))
    assert "Ζωή Ёлкина-Øster" in text
    assert "Банк" in text
    assert "за кофе ☕ ?" in text


def test_without_the_font_files_it_falls_back_to_latin_1(tmp_path: Path) -> None:
    statement = make_statement(1, owner="Zoë Šimon Łukasz 王", description="café … ok")
    document = statement_pdf(statement, bank_name="Ŝtelo", generated_at=ISSUED, font_dir=tmp_path)
    [text] = pdf_pages(document)
    assert "Zoë Simon ?ukasz ?" in text  # Ł has no base letter in Unicode
    assert "Stelo" in text
    assert "café ... ok" in text
    assert "Page 1 of 1" in text


def test_a_period_not_over_is_marked_provisional_and_an_empty_one_says_so() -> None:
    empty = Statement("a", "Ada", "USD", JANUARY, *[Decimal("5.00")] * 2, *[Decimal(0)] * 2, ())
    [text] = pdf_pages(
        statement_pdf(empty, bank_name="b", generated_at=datetime(2030, 1, 15, tzinfo=UTC))
    )
    assert "Provisional" in text
    assert "No movements in this period." in text


def test_a_description_too_long_for_its_column_is_cut_with_an_ellipsis() -> None:
    statement = make_statement(1, description="word " * 100)
    [text] = pdf_pages(statement_pdf(statement, bank_name="b", generated_at=ISSUED))
    assert "Deposit: word word" in text
    assert "…" in text
    assert text.count("word") < 30


@pytest.mark.parametrize(
    ("currency", "opening", "amount", "shown"),
    [
        ("JPY", "1000", "150", ("1000", "150", "1150")),
        ("BHD", "1", "0.125", ("1.000", "0.125", "1.125")),
    ],
)
def test_amounts_are_written_in_their_currencys_decimals(
    currency: str, opening: str, amount: str, shown: tuple[str, str, str]
) -> None:
    at = datetime(2030, 1, 2, tzinfo=UTC)
    start, moved = Decimal(opening), Decimal(amount)
    line = StatementLine(at, "deposit", None, moved, start + moved, None, 2)
    statement = Statement(
        "3f1c6a4e-0000-4000-8000-000000000002",
        "Ada",
        currency,
        JANUARY,
        start,
        start + moved,
        moved,
        Decimal("0"),
        (line,),
    )
    body = statement_dict(statement)
    assert (body["opening_balance"], body["lines"][0]["amount"], body["closing_balance"]) == shown
    rows = list(csv.DictReader(io.StringIO(statement_csv(statement).decode())))
    assert (rows[0]["amount"], rows[0]["balance_after"]) == shown[1:]
    text = "\n".join(pdf_pages(statement_pdf(statement, bank_name="Bank", generated_at=at)))
    assert f"+{shown[1]} {currency}" in text
