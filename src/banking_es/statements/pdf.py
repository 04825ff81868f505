"""A statement as a PDF (fpdf2): bank, account, period, summary, the movements, page numbers.

Text is set in DejaVu Sans (Debian's fonts-dejavu-core, installed in the image) so owner names
and descriptions in Greek, Cyrillic and most Latin scripts print as written; a character the
font lacks (e.g. CJK) prints as "?". Without the font files it falls back to Helvetica and
Latin-1 (accents kept where Latin-1 has them). Rows are drawn with `text()`, not fpdf2's
`table()`, which is far slower (docs/performance.md): a year may be thousands of rows.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from fpdf import FPDF
from fpdf.fonts import TTFFont

from banking_es.application.statements import Statement, StatementLine
from banking_es.statements.documents import money

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf"}
LABELS = {
    "opening": "Account opened",
    "deposit": "Deposit",
    "withdrawal": "Withdrawal",
    "transfer_in": "Transfer in",
    "transfer_out": "Transfer out",
    "hold_capture": "Card payment",
}
#: Column x positions (mm) and widths on A4 portrait with 15 mm margins.
_COLUMNS = ((15.0, 36.0), (51.0, 84.0), (135.0, 30.0), (165.0, 30.0))
_HEADINGS = ("Date (UTC)", "Description", "Amount", "Balance")
_ROW = 5.5
_MARGIN = 15.0
_BOTTOM = 20.0


def statement_pdf(
    statement: Statement, *, bank_name: str, generated_at: datetime, font_dir: Path = FONT_DIR
) -> bytes:
    """The statement as a PDF document. CPU-bound (docs/performance.md): call it off the
    event loop (e.g. `run_in_threadpool`)."""
    pdf = _StatementPdf(statement, bank_name, generated_at, font_dir)
    pdf.summary()
    pdf.movements()
    return bytes(pdf.output())


class _StatementPdf(FPDF):
    def __init__(
        self, statement: Statement, bank_name: str, generated_at: datetime, font_dir: Path
    ) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.statement = statement
        self.bank_name = bank_name
        self.generated_at = generated_at
        self.family = self._fonts(font_dir)
        self.set_margins(_MARGIN, _MARGIN, _MARGIN)
        self.set_auto_page_break(True, margin=_BOTTOM)
        self.set_title(f"Statement {statement.account_id} {_period(statement)}")
        self.set_author(bank_name)
        self.set_creator("banking-es")
        self.set_creation_date(generated_at)
        self.add_page()

    def _fonts(self, font_dir: Path) -> str:
        paths = {style: font_dir / name for style, name in FONT_FILES.items()}
        if not all(path.is_file() for path in paths.values()):
            return "helvetica"
        for style, path in paths.items():
            self.add_font("dejavu", style, str(path))
        return "dejavu"

    def clean(self, text: str) -> str:
        """`text` as the font can print it (see the module docstring)."""
        if self.family == "helvetica":
            return "".join(_latin1(c) for c in unicodedata.normalize("NFC", text))
        font = self.fonts["dejavu"]
        assert isinstance(font, TTFFont)
        cmap = font.cmap
        return "".join(c if ord(c) in cmap or c.isspace() else "?" for c in text)

    # ---- every page ----------------------------------------------------------------------

    def header(self) -> None:
        self.set_font(self.family, "B", 15)
        self.cell(0, 8, self.clean(self.bank_name), new_x="LMARGIN", new_y="NEXT")
        self.set_font(self.family, "", 9)
        self.set_text_color(90)
        heading = f"Account statement · {self.statement.account_id} · {_period(self.statement)}"
        self.cell(0, 5, self.clean(heading), new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(0)
        self.set_draw_color(160)
        self.line(_MARGIN, self.get_y() + 1, self.w - _MARGIN, self.get_y() + 1)
        self.ln(5)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self.family, "", 8)
        self.set_text_color(90)
        self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(0)

    # ---- first page ----------------------------------------------------------------------

    def summary(self) -> None:
        s = self.statement
        rows = [
            ("Account", s.account_id),
            ("Account holder", s.owner_name),
            ("Currency", s.currency),
            ("Period", f"{_period(s)} (UTC days, inclusive)"),
            ("Issued", self.generated_at.strftime("%Y-%m-%d %H:%M UTC")),
        ]
        self._pairs(rows, value_style="")
        if not s.period.is_over(self.generated_at):
            self.set_font(self.family, "B", 9)
            self.cell(0, 6, "Provisional: the period has not ended yet.", new_y="NEXT")
            self.set_x(_MARGIN)
        self.ln(3)
        totals = [
            ("Opening balance", _amount(s.opening_balance, s.currency)),
            ("Money in", _amount(s.total_in, s.currency)),
            ("Money out", _amount(s.total_out, s.currency)),
            ("Closing balance", _amount(s.closing_balance, s.currency)),
        ]
        self._pairs(totals, value_style="B", align="R")
        self.ln(4)

    def _pairs(self, rows: Sequence[tuple[str, str]], value_style: str, align: str = "L") -> None:
        for label, value in rows:
            self.set_font(self.family, "", 10)
            self.cell(40, 6, label)
            self.set_font(self.family, value_style, 10)
            self.cell(60 if align == "R" else 0, 6, self.clean(value), align=align)
            self.ln(6)

    # ---- the table -----------------------------------------------------------------------

    def movements(self) -> None:
        lines = self.statement.lines
        if not lines:
            self.set_font(self.family, "", 10)
            self.cell(0, 6, "No movements in this period.", new_y="NEXT")
            return
        self._headings()
        baseline = self.get_y() + 3.9
        self._text(*_COLUMNS[1], baseline, "Opening balance", right=False)
        opening = _amount(self.statement.opening_balance, self.statement.currency)
        self._text(*_COLUMNS[3], baseline, opening, right=True)
        self.set_y(self.get_y() + _ROW)
        limit = self.h - _BOTTOM
        for index, line in enumerate(lines):
            if self.get_y() + _ROW > limit:
                self.add_page()
                self._headings()
            self._row(line, shaded=index % 2 == 1)
        self._totals_row()

    def _headings(self) -> None:
        self.set_font(self.family, "B", 9)
        self.set_fill_color(225, 230, 238)
        self.rect(_MARGIN, self.get_y(), self.w - 2 * _MARGIN, _ROW + 1, style="F")
        baseline = self.get_y() + 4.2
        for (x, width), heading in zip(_COLUMNS, _HEADINGS, strict=True):
            right = heading in ("Amount", "Balance")
            self._text(x, width, baseline, heading, right)
        self.set_y(self.get_y() + _ROW + 1)
        self.set_font(self.family, "", 8.5)

    def _row(self, line: StatementLine, shaded: bool) -> None:
        y = self.get_y()
        if shaded:
            self.set_fill_color(245, 246, 248)
            self.rect(_MARGIN, y, self.w - 2 * _MARGIN, _ROW, style="F")
        baseline = y + 3.9
        currency = self.statement.currency
        cells = (
            line.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
            self._fit(_description(line), _COLUMNS[1][1] - 2),
            _amount(line.amount, currency, signed=True),
            _amount(line.balance_after, currency),
        )
        for index, ((x, width), text) in enumerate(zip(_COLUMNS, cells, strict=True)):
            self._text(x, width, baseline, text, right=index >= 2)
        self.set_y(y + _ROW)

    def _totals_row(self) -> None:
        s = self.statement
        self.set_draw_color(160)
        self.line(_MARGIN, self.get_y(), self.w - _MARGIN, self.get_y())
        if self.get_y() + 3 * _ROW > self.h - _BOTTOM:
            self.add_page()
        self.set_font(self.family, "B", 9)
        for label, value in (
            ("Total money in", s.total_in),
            ("Total money out", s.total_out),
            ("Closing balance", s.closing_balance),
        ):
            baseline = self.get_y() + 4.2
            self._text(_COLUMNS[1][0], _COLUMNS[1][1], baseline, label, right=False)
            self._text(*_COLUMNS[3], baseline, _amount(value, s.currency), right=True)
            self.set_y(self.get_y() + _ROW)

    def _text(self, x: float, width: float, baseline: float, text: str, right: bool) -> None:
        text = self.clean(text)
        if right:
            x = x + width - 1 - self.get_string_width(text)
        else:
            x += 1
        self.text(x, baseline, text)

    def _fit(self, text: str, width: float) -> str:
        """`text` cut (with an ellipsis) to fit `width` mm in the current font."""
        text = self.clean(" ".join(text.split()))
        measured = self.get_string_width(text)
        while measured > width and text:
            keep = max(0, min(len(text) - 1, int(len(text) * width / measured) - 1))
            text = text[:keep].rstrip()
            measured = self.get_string_width(text + "…")
            if measured <= width:
                return text + "…"
        return text


def _period(statement: Statement) -> str:
    return f"{statement.period.first.isoformat()} to {statement.period.last.isoformat()}"


def _description(line: StatementLine) -> str:
    label = LABELS.get(line.type, line.type.replace("_", " ").capitalize())
    return f"{label}: {line.description}" if line.description else label


def _amount(amount: Decimal, currency: str, signed: bool = False) -> str:
    """`1,234.50 USD` (digits as the API writes them, grouped); with `signed`, credits carry
    a "+" (debits always carry "-")."""
    magnitude = money(abs(amount), currency)
    sign = "-" if amount < 0 else "+" if signed else ""
    whole, dot, fraction = magnitude.partition(".")
    return f"{sign}{int(whole):,}{dot}{fraction} {currency}"


def _latin1(char: str) -> str:
    """`char` in Latin-1 (Helvetica's encoding): itself, its compatibility form ("…" is
    "..."), its base letter ("ő" is "o"), or "?"."""
    for form in (char, unicodedata.normalize("NFKD", char)):
        try:
            form.encode("latin-1")
        except UnicodeEncodeError:
            continue
        return form
    base = unicodedata.normalize("NFKD", char)[:1]
    return base if base.isascii() and base.isprintable() else "?"
