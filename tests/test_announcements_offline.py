"""The offline analyser on the shipped samples and on typical exchange filings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.apps.announcements.announcement import Category, FigureKind, KeyFigure
from orchestrator.apps.announcements.categories import classify
from orchestrator.apps.announcements.errors import InvalidJob, TextExtractionError
from orchestrator.apps.announcements.figures import extract_figures
from orchestrator.apps.announcements.offline import OfflineAnalyser
from orchestrator.apps.announcements.payloads import parse_job
from orchestrator.apps.announcements.pdftext import announcement_text
from orchestrator.apps.announcements.sentiment import sentiment_score
from orchestrator.apps.announcements.summary import body_text, sentences, shorten, summarise

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "announcements" / "announcements.jsonl"

EXPECTED = {
    "NSE-20241014-RELIANCE-01": Category.FINANCIAL_RESULTS,
    "BSE-20250410-TCS-01": Category.FINANCIAL_RESULTS,
    "NSE-20241111-IDEA-01": Category.FINANCIAL_RESULTS,
    "NSE-20241017-INFY-02": Category.DIVIDEND,
    "BSE-20240420-HDFCBANK-03": Category.DIVIDEND,
    "NSE-20241015-ITC-01": Category.BOARD_MEETING,
    "NSE-20241105-TATAMOTORS-01": Category.BOARD_MEETING,
    "BSE-20240910-WIPRO-01": Category.ACQUISITION_MERGER,
    "BSE-20241021-TATASTEEL-02": Category.ACQUISITION_MERGER,
    "NSE-20240912-ICICIBANK-01": Category.INSIDER_TRADING,
    "BSE-20240805-ADANIPORTS-01": Category.INSIDER_TRADING,
    "BSE-20240828-BAJFINANCE-01": Category.CREDIT_RATING,
    "NSE-20240919-YESBANK-01": Category.CREDIT_RATING,
    "BSE-20241104-HINDUNILVR-01": Category.OTHER,
    "NSE-20241101-MARUTI-01": Category.OTHER,
}
DEAD = {"BSE-20241022-LT-01": TextExtractionError, "BSE-20241030-MALFORMED-01": InvalidJob}


def sample_jobs() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SAMPLES.read_text().splitlines() if line.strip()]


def analyse_sample(job: dict[str, Any]) -> Any:
    announcement = parse_job(job)
    text = announcement_text(announcement, ROOT, max_pages=50, max_chars=200_000)
    return OfflineAnalyser(400).analyse(announcement, text)


def figure(figures: tuple[KeyFigure, ...], **want: Any) -> KeyFigure:
    for f in figures:
        if all(getattr(f, k) == v for k, v in want.items()):
            return f
    raise AssertionError(f"no figure with {want} in {[f.to_dict() for f in figures]}")


def test_samples_cover_every_category_several_symbols_and_pdfs() -> None:
    jobs = sample_jobs()
    assert {j["id"] for j in jobs} == set(EXPECTED) | set(DEAD)
    assert set(EXPECTED.values()) == set(Category)
    assert len({j.get("symbol") for j in jobs}) >= 10
    pdfs = [j for j in jobs if "pdf_path" in j]
    assert len(pdfs) >= 5
    for job in pdfs:
        path = ROOT / job["pdf_path"]
        assert path.is_file() and path.stat().st_size < 8_000, path


@pytest.mark.parametrize("job", sample_jobs(), ids=lambda j: j["id"])
def test_each_sample_is_categorised_or_refused(job: dict[str, Any]) -> None:
    if job["id"] in DEAD:
        with pytest.raises(DEAD[job["id"]]):
            analyse_sample(job)
        return
    analysis = analyse_sample(job)
    assert analysis.category is EXPECTED[job["id"]]
    assert -1.0 <= analysis.sentiment <= 1.0
    assert 40 <= len(analysis.summary) <= 400
    assert "Dear Sir" not in analysis.summary and "take the same on record" not in analysis.summary


def test_sample_figures_and_dates_are_normalised() -> None:
    jobs = {j["id"]: j for j in sample_jobs()}
    reliance = analyse_sample(jobs["NSE-20241014-RELIANCE-01"]).key_figures
    assert figure(reliance, label="revenue").value == 2_35_481 * 10**7
    assert figure(reliance, label="net_profit").currency == "INR"
    assert figure(reliance, kind=FigureKind.DATE, label="period_end").value == "2024-09-30"
    infy = analyse_sample(jobs["NSE-20241017-INFY-02"]).key_figures
    assert figure(infy, label="dividend").value == 21.0
    assert figure(infy, label="record_date").value == "2024-10-29"
    assert figure(infy, label="payment_date").value == "2024-11-08"
    wipro = analyse_sample(jobs["BSE-20240910-WIPRO-01"]).key_figures
    assert figure(wipro, currency="USD", label="consideration").value == 150_000_000.0
    assert figure(wipro, currency="INR", label="consideration").value == 1259 * 10**7


def test_sentiment_follows_the_news() -> None:
    jobs = {j["id"]: j for j in sample_jobs()}
    assert analyse_sample(jobs["NSE-20241111-IDEA-01"]).sentiment < -0.3  # net loss
    assert analyse_sample(jobs["NSE-20240919-YESBANK-01"]).sentiment > 0.3  # upgrade
    assert abs(analyse_sample(jobs["BSE-20241104-HINDUNILVR-01"]).sentiment) < 0.2


def test_offline_analysis_is_deterministic() -> None:
    job = sample_jobs()[0]
    assert analyse_sample(job) == analyse_sample(job)


@pytest.mark.parametrize(
    ("title", "text", "want"),
    [
        (
            "Board Meeting Intimation for Quarterly Results",
            "A meeting of the Board of Directors will be held on 25th January, 2025 to "
            "consider and approve the unaudited financial results for the quarter ended "
            "December 31, 2024.",
            Category.BOARD_MEETING,
        ),
        (
            "Outcome of Board Meeting - Interim Dividend",
            "The Board at its meeting held today declared an interim dividend of Rs 5 per "
            "equity share. The record date is 2nd February 2025.",
            Category.DIVIDEND,
        ),
        (
            "Outcome of Board Meeting",
            "The Board approved the audited financial results for the year ended March 31, "
            "2024 and recommended a final dividend of Rs 8 per share.",
            Category.FINANCIAL_RESULTS,
        ),
        (
            "Closure of Trading Window",
            "Pursuant to the SEBI (Prohibition of Insider Trading) Regulations, 2015, the "
            "trading window shall remain closed from January 1, 2025.",
            Category.INSIDER_TRADING,
        ),
        (
            "Disclosures under Reg. 29(1) of SEBI (SAST) Regulations, 2011",
            "Acquisition of shares by the promoter through the open market.",
            Category.INSIDER_TRADING,
        ),
        (
            "Disclosure under Regulation 31(1) of SEBI (SAST) Regulations, 2011",
            "Creation of pledge on 10,00,000 equity shares held by the promoter.",
            Category.INSIDER_TRADING,
        ),
        (
            "Announcement under Regulation 30 (LODR)-Credit Rating",
            "CARE Ratings Limited has revised the rating on the bank facilities to CARE AA-; "
            "Stable from CARE A+; Positive.",
            Category.CREDIT_RATING,
        ),
        (
            "Updates on Scheme of Arrangement",
            "The shareholders approved the Scheme of Arrangement between the Company and its "
            "wholly owned subsidiary at the NCLT convened meeting.",
            Category.ACQUISITION_MERGER,
        ),
        (
            "Record date for Bonus Issue",
            "The Company has fixed March 15, 2025 as the record date for bonus shares in the "
            "ratio of 1:1.",
            Category.OTHER,
        ),
        (
            "Resignation of Statutory Auditor",
            "M/s XYZ & Co., Statutory Auditors of the Company, have tendered their resignation.",
            Category.OTHER,
        ),
        (
            "Intimation of Analyst / Institutional Investor Meeting",
            "The management will meet analysts on January 10, 2025.",
            Category.OTHER,
        ),
    ],
)
def test_classify_typical_filings(title: str, text: str, want: Category) -> None:
    assert classify(title, text) is want


@pytest.mark.parametrize(
    ("text", "kind", "value", "currency"),
    [
        ("revenue of Rs. 2,35,481 crore", FigureKind.AMOUNT, 2_354_810_000_000.0, "INR"),
        ("profit of ₹16,563.5 Cr.", FigureKind.AMOUNT, 165_635_000_000.0, "INR"),
        ("a fee of INR 12.5 lakh", FigureKind.AMOUNT, 1_250_000.0, "INR"),
        ("a dividend of Rs.10/- per share", FigureKind.AMOUNT, 10.0, "INR"),
        ("face value of Re. 1 each", FigureKind.AMOUNT, 1.0, "INR"),
        ("for USD 1.2 billion", FigureKind.AMOUNT, 1_200_000_000.0, "USD"),
        ("for US$ 250 mn", FigureKind.AMOUNT, 250_000_000.0, "USD"),
        ("for $75 million", FigureKind.AMOUNT, 75_000_000.0, "USD"),
        ("for EUR 45 million", FigureKind.AMOUNT, 45_000_000.0, "EUR"),
        ("an order of 5,000 crore", FigureKind.AMOUNT, 50_000_000_000.0, "INR"),
        ("growth of 12.5%", FigureKind.PERCENT, 12.5, None),
        ("held on 15th August, 2024.", FigureKind.DATE, "2024-08-15", None),
        ("held on August 15, 2024.", FigureKind.DATE, "2024-08-15", None),
        ("held on Aug. 5, 2024.", FigureKind.DATE, "2024-08-05", None),
        ("from 1-Oct-24 onwards", FigureKind.DATE, "2024-10-01", None),
        ("dated 15.08.2024", FigureKind.DATE, "2024-08-15", None),
        ("dated 05/08/2024", FigureKind.DATE, "2024-08-05", None),
        ("dated 2024-08-15", FigureKind.DATE, "2024-08-15", None),
        ("on 3 May 2024, the Company", FigureKind.DATE, "2024-05-03", None),
    ],
)
def test_figures_are_normalised(
    text: str, kind: FigureKind, value: float | str, currency: str | None
) -> None:
    figures = extract_figures(text)
    assert [(f.kind, f.value, f.currency) for f in figures] == [(kind, value, currency)]


def test_figures_ignore_non_figures() -> None:
    text = "Regulation 30 of SEBI, Scrip Code: 500325, Mumbai - 400 001, dated 31.02.2024."
    assert extract_figures(text) == ()


def test_figures_are_labelled_from_context() -> None:
    text = (
        "The Company has fixed Tuesday, October 29, 2024 as the Record Date for the interim "
        "dividend of Rs. 21 per share, payable on November 8, 2024. Net profit was Rs. 50 crore."
    )
    labels = {f.label: f.value for f in extract_figures(text)}
    assert labels == {
        "record_date": "2024-10-29",
        "dividend": 21.0,
        "payment_date": "2024-11-08",
        "net_profit": 500_000_000.0,
    }


def test_sentiment_word_list() -> None:
    assert sentiment_score("Revenue grew 12%; net profit rose 18%, highest ever.") > 0.5
    assert sentiment_score("ICRA downgraded the rating; outlook revised to Negative.") < -0.5
    neutral = "Statement of Profit and Loss. Record Date fixed. Closure of trading window."
    assert sentiment_score(neutral) == 0.0
    assert sentiment_score("There has been no default in payment of interest.") > 0
    assert sentiment_score("") == 0.0


def test_summary_drops_letter_boilerplate_and_preamble() -> None:
    letter = (
        "To,\nBSE Limited\nPhiroze Jeejeebhoy Towers, Dalal Street\nMumbai - 400 001\n"
        "Scrip Code: 500325\n\nDear Sir/Madam,\n\nSub: Outcome of Board Meeting\n\n"
        "Pursuant to Regulation 30 of the SEBI (Listing Obligations and Disclosure "
        "Requirements) Regulations, 2015, we wish to inform you that the Board of Directors "
        "at its meeting held today approved the acquisition of XYZ Limited.\n"
        "The meeting commenced at 2:00 p.m. and concluded at 3:00 p.m.\n"
        "Kindly take the same on record.\nYours faithfully,\nFor ABC Limited\nCompany Secretary"
    )
    assert "BSE Limited" not in body_text(letter)
    summary = summarise("Outcome", letter, 200)
    assert summary == (
        "The Board of Directors at its meeting held today approved the acquisition of XYZ Limited."
    )


def test_summary_is_bounded_and_falls_back_to_title() -> None:
    long = " ".join(["The Board approved the results of the quarter."] * 40)
    assert len(summarise("Title", long, 120)) <= 120
    assert summarise("Loss of share certificate", "Dear Sir,\nSd/-", 100) == (
        "Loss of share certificate"
    )
    assert shorten("one two three four", 10) == "one two…"


def test_sentences_do_not_split_at_abbreviations() -> None:
    text = "Dividend of Rs. 5 per share, i.e. 50%. Mr. A. Kumar of XYZ Pvt. Ltd. resigned. Done."
    assert sentences(text) == [
        "Dividend of Rs. 5 per share, i.e. 50%.",
        "Mr. A. Kumar of XYZ Pvt. Ltd. resigned.",
        "Done.",
    ]
