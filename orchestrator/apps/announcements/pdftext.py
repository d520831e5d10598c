"""The text of an announcement: inline, or extracted from its PDF with pypdf.

Every way a PDF can be unusable ends in a ``TextExtractionError`` with a
reason an operator can act on, never in another exception: a missing file,
a file that is not a PDF, one that is truncated, one encrypted with a
password, one whose pages are images (a scan), and whatever pypdf itself
raises on a malformed file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError

from orchestrator.apps.announcements.announcement import Announcement
from orchestrator.apps.announcements.errors import TextExtractionError

__all__ = ["announcement_text", "extract_pdf_text", "resolve_pdf_path"]

_MIN_TEXT_CHARS = 16  # fewer letters and digits than this over all pages: a scan
_HEADER_WINDOW = 1024
_TRAILER_WINDOW = 2048


def resolve_pdf_path(pdf_path: str, root: Path) -> Path:
    """An absolute path as is; a relative one under the repo ``root``."""
    path = Path(os.path.expanduser(pdf_path))
    return path if path.is_absolute() else root / path


def announcement_text(job: Announcement, root: Path, max_pages: int, max_chars: int) -> str:
    """The job's inline text and its PDF's text (either may be absent), at most ``max_chars``."""
    parts = [job.text.strip()] if job.text else []
    if job.pdf_path:
        parts.append(extract_pdf_text(resolve_pdf_path(job.pdf_path, root), max_pages))
    return "\n\n".join(parts)[:max_chars]


def extract_pdf_text(path: Path, max_pages: int = 50) -> str:
    """The text of the first ``max_pages`` pages; ``TextExtractionError`` when there is none."""
    _check_file(path)
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings are ours to report
    try:
        reader = PdfReader(path)
        _decrypt(reader, path)
        pages = [page.extract_text() or "" for page in reader.pages[:max_pages]]
    except TextExtractionError:
        raise
    except (DependencyError, FileNotDecryptedError) as exc:
        reason = f"PDF is encrypted and cannot be decrypted: {path} ({exc})"
        raise TextExtractionError(reason) from exc
    except Exception as exc:  # pypdf raises many types on malformed input
        detail = f"{type(exc).__name__}: {exc}"
        raise TextExtractionError(f"cannot read PDF {path}: {detail}") from exc
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if sum(ch.isalnum() for ch in text) < _MIN_TEXT_CHARS:
        raise TextExtractionError(f"PDF has no extractable text (scanned image?): {path}")
    return text


def _check_file(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEADER_WINDOW)
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TRAILER_WINDOW))
            tail = handle.read()
    except FileNotFoundError:
        raise TextExtractionError(f"PDF file not found: {path}") from None
    except OSError as exc:
        raise TextExtractionError(f"cannot open PDF {path}: {exc.strerror or exc}") from None
    if b"%PDF-" not in head:
        raise TextExtractionError(f"not a PDF file (no %PDF- header): {path}")
    if b"%%EOF" not in tail:
        raise TextExtractionError(f"PDF is truncated (no %%EOF marker at the end): {path}")


def _decrypt(reader: PdfReader, path: Path) -> None:
    """Open a PDF protected only by an owner password; refuse one that needs a user password."""
    if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        raise TextExtractionError(f"PDF is encrypted (a password is required): {path}")
