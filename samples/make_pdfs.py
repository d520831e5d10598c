"""Regenerate the sample announcement PDFs in ``samples/announcements/``.

    .venv/bin/python samples/make_pdfs.py

Needs fpdf2 and Pillow (dev extras). The generated PDFs are committed, so a
fresh machine never runs this. Output is reproducible: fixed creation dates,
core fonts only (nothing embedded), so each file is a few KB. The letters
follow the shape of real BSE/NSE filings; companies are real, every figure
and name in them is illustrative, not taken from an actual filing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF
from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent / "announcements"
CREATED = datetime(2024, 11, 15, 9, 30, tzinfo=UTC)

EXCHANGES = (
    "To,\nBSE Limited\nPhiroze Jeejeebhoy Towers, Dalal Street\nMumbai - 400 001\n"
    "Scrip Code: {code}\n\n"
    "National Stock Exchange of India Limited\n"
    "Exchange Plaza, Bandra Kurla Complex, Bandra (East)\nMumbai - 400 051\nSymbol: {symbol}"
)


@dataclass(frozen=True)
class Letter:
    file: str
    company: str
    symbol: str
    code: str
    date: str
    subject: str
    paragraphs: tuple[str, ...]
    signatory: str


LETTERS = (
    Letter(
        file="reliance_q2fy25_results.pdf",
        company="Reliance Industries Limited",
        symbol="RELIANCE",
        code="500325",
        date="October 14, 2024",
        subject="Outcome of Board Meeting - Unaudited Financial Results for the quarter and "
        "half year ended September 30, 2024",
        paragraphs=(
            "Pursuant to Regulations 30 and 33 of the SEBI (Listing Obligations and Disclosure "
            "Requirements) Regulations, 2015, we wish to inform you that the Board of Directors "
            "of the Company at its meeting held today, i.e. October 14, 2024, has approved the "
            "Unaudited Standalone and Consolidated Financial Results for the quarter and half "
            "year ended September 30, 2024, along with the Limited Review Report of the "
            "Statutory Auditors.",
            "Consolidated revenue from operations for the quarter stood at Rs. 2,35,481 crore, "
            "up 2.1% year-on-year. EBITDA was Rs. 43,934 crore and net profit attributable to "
            "owners was Rs. 16,563 crore. Earnings per share for the quarter was Rs. 12.24.",
            "The meeting of the Board commenced at 3:00 p.m. and concluded at 6:10 p.m.",
            "Kindly take the same on record.",
        ),
        signatory="Savithri Parekh\nCompany Secretary and Compliance Officer",
    ),
    Letter(
        file="hdfcbank_final_dividend.pdf",
        company="HDFC Bank Limited",
        symbol="HDFCBANK",
        code="500180",
        date="April 20, 2024",
        subject="Intimation of Record Date for Final Dividend",
        paragraphs=(
            "Pursuant to Regulation 42 of the SEBI (Listing Obligations and Disclosure "
            "Requirements) Regulations, 2015, we wish to inform you that the Board of Directors "
            "has recommended a final dividend of Rs. 19.50 per equity share of face value of "
            "Re. 1 each for the financial year ended March 31, 2024, subject to the approval "
            "of the shareholders at the ensuing Annual General Meeting.",
            "The Bank has fixed Friday, May 10, 2024 as the Record Date for determining the "
            "members entitled to receive the final dividend. The dividend, if declared, will "
            "be paid on or after July 5, 2024.",
            "This is for your information and records.",
        ),
        signatory="Ajay Agarwal\nCompany Secretary",
    ),
    Letter(
        file="tatamotors_board_outcome.pdf",
        company="Tata Motors Limited",
        symbol="TATAMOTORS",
        code="500570",
        date="November 5, 2024",
        subject="Outcome of Board Meeting held on November 5, 2024",
        paragraphs=(
            "In terms of Regulation 30 of the SEBI (Listing Obligations and Disclosure "
            "Requirements) Regulations, 2015, we hereby inform you that the Board of Directors "
            "at its meeting held today has approved the raising of funds through the issue of "
            "rated, listed, unsecured, redeemable Non-Convertible Debentures aggregating up to "
            "Rs. 2,000 crore on a private placement basis, in one or more tranches.",
            "The Board also approved the appointment of Ms. Anita Rao as an Additional Director "
            "(Independent) for a term of five years with effect from November 6, 2024, subject "
            "to the approval of the shareholders.",
            "The meeting of the Board commenced at 11:00 a.m. and concluded at 1:45 p.m.",
            "Kindly take the same on record.",
        ),
        signatory="Maloy Kumar Gupta\nCompany Secretary",
    ),
    Letter(
        file="tatasteel_amalgamation.pdf",
        company="Tata Steel Limited",
        symbol="TATASTEEL",
        code="500470",
        date="October 21, 2024",
        subject="Scheme of Amalgamation of Tata Steel Long Products Limited into and with "
        "Tata Steel Limited - Sanction by the National Company Law Tribunal",
        paragraphs=(
            "Further to our earlier intimations, we wish to inform you that the Hon'ble "
            "National Company Law Tribunal, Mumbai Bench, has sanctioned the Scheme of "
            "Amalgamation of Tata Steel Long Products Limited, a subsidiary of the Company, "
            "into and with Tata Steel Limited, by its order dated October 18, 2024.",
            "As per the share exchange ratio approved under the Scheme, 67 fully paid-up equity "
            "shares of Re. 1 each of the Company will be issued for every 10 equity shares of "
            "Rs. 10 each held in Tata Steel Long Products Limited. The amalgamation is expected "
            "to unlock synergies of about Rs. 850 crore a year and strengthen the long "
            "products business.",
            "The Scheme will become effective on the filing of the certified copy of the order "
            "with the Registrar of Companies.",
            "Kindly take the same on record.",
        ),
        signatory="Parvatheesam Kanchinadham\nCompany Secretary",
    ),
    Letter(
        file="icicibank_pit_disclosure.pdf",
        company="ICICI Bank Limited",
        symbol="ICICIBANK",
        code="532174",
        date="September 12, 2024",
        subject="Disclosure under Regulation 7(2) of the SEBI (Prohibition of Insider Trading) "
        "Regulations, 2015",
        paragraphs=(
            "Pursuant to Regulation 7(2)(b) of the SEBI (Prohibition of Insider Trading) "
            "Regulations, 2015, we enclose herewith the disclosure in Form C received from "
            "Mr. Rakesh Jha, Executive Director and a Designated Person of the Bank, regarding "
            "the sale of 25,000 equity shares of the Bank on September 10, 2024 in the open "
            "market, for an aggregate value of Rs. 3.07 crore.",
            "Following the sale, his holding in the Bank stands at 1,45,000 equity shares, "
            "representing 0.002% of the paid-up share capital.",
            "Kindly take the same on record.",
        ),
        signatory="Prachiti Lalingkar\nCompany Secretary",
    ),
    Letter(
        file="bajfinance_credit_rating.pdf",
        company="Bajaj Finance Limited",
        symbol="BAJFINANCE",
        code="500034",
        date="August 28, 2024",
        subject="Disclosure under Regulation 30 - Credit Rating",
        paragraphs=(
            "Pursuant to Regulation 30 of the SEBI (Listing Obligations and Disclosure "
            "Requirements) Regulations, 2015, we wish to inform you that CRISIL Ratings Limited "
            "has reaffirmed its rating of CRISIL AAA/Stable on the long-term debt programme "
            "and CRISIL A1+ on the commercial paper programme of Rs. 50,000 crore of the "
            "Company.",
            "The rating reflects the strong market position of the Company, its robust "
            "capitalisation and healthy earnings profile.",
            "This is for your information and records.",
        ),
        signatory="R. Vijay\nCompany Secretary",
    ),
)

SCANNED_FILE = "lt_board_outcome_scanned.pdf"
SCANNED_LINES = (
    "LARSEN & TOUBRO LIMITED",
    "Outcome of Board Meeting held on October 22, 2024",
    "The Board approved the Unaudited Financial Results",
    "for the quarter ended September 30, 2024.",
    "(scanned copy of the signed letter)",
)


def letter_pdf(letter: Letter) -> FPDF:
    pdf = _new_pdf()
    pdf.set_font("Helvetica", "B", 12)
    pdf.multi_cell(0, 6, letter.company.upper(), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    paragraphs = (
        f"Date: {letter.date}",
        EXCHANGES.format(code=letter.code, symbol=letter.symbol),
        "Dear Sir/Madam,",
        f"Sub: {letter.subject}",
        *letter.paragraphs,
        f"Yours faithfully,\nFor {letter.company}\n\nSd/-\n{letter.signatory}",
    )
    for text in paragraphs:
        pdf.multi_cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
    return pdf


def scanned_pdf() -> FPDF:
    """A page that is only a picture of text, as a scanner makes it."""
    image = Image.new("1", (900, 260), 1)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(SCANNED_LINES):
        draw.text((30, 30 + 44 * i), line, fill=0)
    pdf = _new_pdf()
    pdf.image(image, x=10, y=10, w=190)
    return pdf


def _new_pdf() -> FPDF:
    pdf = FPDF(format="A4")
    pdf.set_creation_date(CREATED)
    pdf.set_producer("samples/make_pdfs.py")
    pdf.set_margins(20, 18, 20)
    pdf.add_page()
    return pdf


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for letter in LETTERS:
        letter_pdf(letter).output(str(OUT / letter.file))
    scanned_pdf().output(str(OUT / SCANNED_FILE))
    for path in sorted(OUT.glob("*.pdf")):
        print(f"{path.relative_to(OUT.parent.parent)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
