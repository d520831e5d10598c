"""PDF text extraction and job validation: every bad input is a clear per-job error."""

from __future__ import annotations

from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from orchestrator.apps.announcements.announcement import Announcement
from orchestrator.apps.announcements.errors import InvalidJob, TextExtractionError
from orchestrator.apps.announcements.payloads import parse_job
from orchestrator.apps.announcements.pdftext import announcement_text, extract_pdf_text

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "announcements"
GOOD = SAMPLES / "hdfcbank_final_dividend.pdf"


def encrypted(tmp_path: Path, user_password: str) -> Path:
    writer = PdfWriter()
    writer.append(PdfReader(GOOD))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    path = tmp_path / "encrypted.pdf"
    writer.write(path)
    return path


def test_extracts_text_from_a_sample_pdf() -> None:
    text = extract_pdf_text(GOOD)
    assert "Record Date" in text and "Rs. 19.50" in text


def test_pdf_with_only_an_owner_password_is_read(tmp_path: Path) -> None:
    assert "Record Date" in extract_pdf_text(encrypted(tmp_path, user_password=""))


def test_scanned_pdf_has_no_text() -> None:
    with pytest.raises(TextExtractionError, match=r"no extractable text \(scanned image\?\)"):
        extract_pdf_text(SAMPLES / "lt_board_outcome_scanned.pdf")


def test_pdf_needing_a_password(tmp_path: Path) -> None:
    with pytest.raises(TextExtractionError, match="encrypted"):
        extract_pdf_text(encrypted(tmp_path, user_password="secret"))


def test_truncated_pdf(tmp_path: Path) -> None:
    path = tmp_path / "truncated.pdf"
    path.write_bytes(GOOD.read_bytes()[: GOOD.stat().st_size // 2])
    with pytest.raises(TextExtractionError, match="truncated"):
        extract_pdf_text(path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not a PDF"),
        (b"<html><body>404 Not Found</body></html>", "not a PDF"),
        (b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\ngarbage\n%%EOF\n", "cannot read"),
        (b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF", "cannot read|no extractable"),
    ],
    ids=["empty", "html", "broken-objects", "binary-noise"],
)
def test_broken_files(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(content)
    with pytest.raises(TextExtractionError, match=reason):
        extract_pdf_text(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(TextExtractionError, match="not found"):
        extract_pdf_text(tmp_path / "absent.pdf")
    with pytest.raises(TextExtractionError, match="cannot open"):
        extract_pdf_text(tmp_path)


def test_text_from_relative_and_absolute_paths_and_inline() -> None:
    relative = Announcement("1", "X", "NSE", "T", pdf_path=str(GOOD.relative_to(ROOT)))
    absolute = Announcement("1", "X", "NSE", "T", pdf_path=str(GOOD))
    assert announcement_text(relative, ROOT, 50, 100_000) == extract_pdf_text(GOOD)
    assert announcement_text(absolute, Path("/nonexistent"), 50, 100_000) == extract_pdf_text(GOOD)
    both = Announcement("1", "X", "NSE", "T", text="Headline.", pdf_path=str(GOOD))
    assert announcement_text(both, ROOT, 50, 100_000).startswith("Headline.\n\n")
    assert len(announcement_text(both, ROOT, 50, 20)) == 20


def test_a_valid_job_is_normalised() -> None:
    job = parse_job(
        {"id": 42, "symbol": " reliance ", "exchange": "nse", "title": " A\n title ", "text": "x"}
    )
    assert job == Announcement("42", "RELIANCE", "NSE", "A title", text="x")


@pytest.mark.parametrize(
    ("job", "reason"),
    [
        ({"id": "1", "exchange": "NSE", "title": "T", "text": "x"}, "symbol: is required"),
        ({"id": "1", "symbol": 5, "exchange": "NSE", "title": "T", "text": "x"}, "symbol: must be"),
        (
            {"id": "1", "symbol": "A", "exchange": "", "title": "T", "text": "x"},
            "exchange: must not",
        ),
        ({"symbol": "A", "exchange": "NSE", "title": "T", "text": "x"}, "id: is required"),
        ({"id": True, "symbol": "A", "exchange": "NSE", "title": "T", "text": "x"}, "id: must be"),
        (
            {"id": "1", "symbol": "A", "exchange": "NSE", "title": "T"},
            "one of 'text' or 'pdf_path'",
        ),
        ({"id": "1", "symbol": "A", "exchange": "NSE", "title": "T", "text": 3}, "text: must be"),
        ({"id": "1", "symbol": "A", "exchange": "NSE", "title": "T", "pdf_path": " "}, "pdf_path"),
        (["not", "a", "dict"], "must be a mapping, got list"),
    ],
)
def test_invalid_jobs_name_the_field(job: object, reason: str) -> None:
    with pytest.raises(InvalidJob, match=reason) as info:
        parse_job(job)
    assert info.value.permanent


def test_invalid_job_lists_every_problem() -> None:
    with pytest.raises(InvalidJob) as info:
        parse_job({"title": 1})
    for field in ("id", "symbol", "exchange", "title"):
        assert f"{field}:" in info.value.reason
