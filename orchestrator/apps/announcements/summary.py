"""Announcement text cleaned of letter boilerplate, split into sentences, summarised.

Exchange filings are letters: an address block (BSE Limited, Phiroze
Jeejeebhoy Towers, ...), a salutation, a subject line, one or two sentences
that matter, then "Kindly take the same on record" and a signature. The
summary is the salient sentences in their original order, with the legal
preamble ("Pursuant to Regulation 30 of the SEBI (LODR) Regulations, 2015,
we wish to inform you that") cut off, bounded in length.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["body_text", "normalise", "sentences", "shorten", "summarise"]

_BOILERPLATE_LINE = re.compile(
    r"""^(?:to,?|the\s+(?:general\s+)?manager\b.*|(?:the\s+)?(?:listing|corporate\s+\w+)\s+dep.*
    |bse\s+(?:limited|ltd).*|(?:the\s+)?national\s+stock\s+exchange.*|phiroze.*|p\.?\s?j\.?\s+towers.*
    |.*dalal\s+street.*|exchange\s+plaza.*|.*bandra[\s-]*kurla.*|.*bandra\s*\(e.*|mumbai\s*[-–]?\s*4\d\d\s?\d{3}.*
    |(?:scrip|security|stock|company)\s+(?:code|id|symbol|name).*|symbol\s*[:\-].*|isin\b.*
    |(?:nse|bse)\b\s*(?:symbol|scrip\s+code|code)?\s*[:\-].*|dear\s+(?:sir|madam|sirs|shareholder).*
    |(?:sub|subject|ref|reference|re)\s*[:.\-].*|yours\s+(?:faithfully|truly|sincerely).*
    |thank(?:ing)?\s+you.*|for\s+and\s+on\s+behalf\s+of.*|for\s+.{2,80}\b(?:limited|ltd\.?)
    |.*company\s+secretary.*|.*compliance\s+officer.*|encl.*|(?:date|dated|place)\s*[:\-].*
    |(?:cin|gstin|pan|din|membership\s+no)\b.*|.*regd\.?\s+office.*|.*registered\s+office.*
    |.*corporate\s+office.*|(?:tel|phone|fax|e-?mail|website|web)\b\s*[:.\-].*|.*www\.\S+.*|.*\S+@\S+.*
    |page\s+\d+.*|[\d\s./-]*|sd/?-?|\(?(?:acs|fcs)\b.*)$""",
    re.IGNORECASE | re.VERBOSE,
)

_BOILERPLATE_SENTENCE = re.compile(
    r"""take\s+(?:the\s+)?(?:same|this|above|it)\s+on\s+(?:your\s+)?records?
    |for\s+your\s+(?:kind\s+)?(?:information|reference)\s+and\s+(?:records?|dissemination)
    |this\s+is\s+for\s+your\s+(?:kind\s+)?information|(?:commenced|started)\s+at\s+\d
    |concluded\s+at\s+\d|(?:is|are|will\s+be)\s+(?:also\s+)?(?:available|uploaded|hosted|placed)
    \s+on\s+the\s+(?:website|web-?site)|^kindly\s+acknowledge""",
    re.IGNORECASE | re.VERBOSE,
)

_PREAMBLE = re.compile(
    r"""^(?:(?:pursuant\s+to|in\s+terms\s+of|in\s+compliance\s+with|as\s+per|under)\b
    .{0,300}?regulations?,?\s*(?:19|20)\d\d(?:,?\s*as\s+amended(?:\s+from\s+time\s+to\s+time)?)?
    (?:\s*\([^)]{0,80}\))?\s*,?\s*(?:and\s+)?
    |(?:we\s+)?(?:wish|would\s+like|are\s+pleased|hereby\s+wish)\s+to\s+(?:inform|intimate|announce)
    (?:\s+you)?(?:\s+that)?\s*,?\s*
    |we\s+(?:hereby\s+)?(?:inform|intimate)(?:\s+you)?(?:\s+that)?\s*,?\s*
    |this\s+is\s+to\s+(?:inform|intimate)(?:\s+you)?(?:\s+that)?\s*,?\s*
    |please\s+(?:note|be\s+informed)\s+that\s*,?\s*
    |(?:further\s+to|in\s+continuation\s+(?:of|to))\s+our\s+(?:earlier\s+)?
    (?:letters?|intimations?|communications?|disclosures?)[^,]{0,80},\s*)""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)

_SUBJECT = re.compile(r"(?:sub|subject)\s*[:.\-]", re.IGNORECASE)
_ABBREVIATIONS = frozenset((
    "rs", "re", "no", "nos", "ltd", "pvt", "co", "inc", "corp", "mr", "mrs", "ms", "dr", "sr", "jr",
    "st", "viz", "vs", "etc", "reg", "regn", "sec", "cl", "approx", "jan", "feb", "mar", "apr",
    "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "govt", "dept", "est", "cr", "fig",
    "ref", "sub", "hon'ble", "bros", "m/s", "u/s", "w.e.f", "p.m", "a.m", "i.e", "e.g", "cf",
    "para", "art", "sch", "ch", "vol",
))  # fmt: skip
_SENTENCE_END = re.compile(r"[.!?](?=\s+[\"'(“‘]?[A-Z0-9₹$])")
_ACTION = re.compile(
    r"\b(?:approved|declared|recommended|considered|acquir\w*|amalgamat\w*|merg\w*|"
    r"reaffirm\w*|upgrad\w*|downgrad\w*|assigned|revised|announc\w*|appoint\w*|"
    r"disclos\w*|sold|purchased|allot\w*|fixed|scheduled|report\w*|posted|signed|entered|"
    r"sanction\w*|received|launch\w*|won|awarded)\b",
    re.IGNORECASE,
)
_FIGURE = re.compile(
    r"(?:₹|\brs\.?|\binr\b|\busd\b|\$|%|\bcrores?\b|\blakhs?\b|\bper\s+(?:equity\s+)?share\b)",
    re.IGNORECASE,
)


_LEAD_SCORE = 4
_SUBJECT_WRAP_WORDS = 12


@dataclass(frozen=True, slots=True)
class _Candidate:
    position: int
    text: str
    score: int


def normalise(text: str) -> str:
    """Unicode NFKC, one kind of line break, words hyphenated across lines joined."""
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"([a-z])-\n([a-z])", r"\1\2", text)
    text = re.sub(r"[^\S\n]+", " ", text)
    return re.sub(r"\n\s*\n\s*", "\n\n", text).strip()


def body_text(text: str) -> str:
    """The letter without its address block, salutation, subject and signature.

    Lines that end a sentence or run on into the next line are joined; a short
    line without closing punctuation followed by a capitalised line (a
    heading) becomes a sentence of its own. A subject line wrapped onto a
    second line loses both.
    """
    lines = [line.strip() for line in normalise(text).split("\n")]
    parts: list[str] = []
    in_subject = False
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        if not line:
            in_subject = False
            continue
        open_ended = not line.endswith((".", ",", ";", ":", "-", "!", "?"))
        subject_tail = in_subject and open_ended and len(line.split()) <= _SUBJECT_WRAP_WORDS
        in_subject = False
        if subject_tail:
            continue
        if _BOILERPLATE_LINE.fullmatch(line):
            in_subject = _SUBJECT.match(line) is not None and open_ended
            continue
        heading = open_ended and len(line.split()) <= 8 and not after[:1].islower()
        parts.append(line + "." if heading else line)
    return " ".join(parts)


def sentences(text: str) -> list[str]:
    """Split running text into sentences, not at ``Rs.``, ``Ltd.``, ``i.e.`` or initials."""
    out: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        words = text[start : match.start()].split()
        last = words[-1].lstrip("(").lower() if words else ""
        if last in _ABBREVIATIONS or len(last) == 1 or re.fullmatch(r"(?:[a-z]\.)+[a-z]", last):
            continue
        out.append(text[start : match.end()].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if s]


def strip_preamble(sentence: str) -> str:
    """Cut "Pursuant to Regulation 30 ..., we wish to inform you that" off the front."""
    previous = None
    while previous != sentence:
        previous = sentence
        sentence = _PREAMBLE.sub("", sentence, count=1).lstrip(" ,;:-")
    return sentence[:1].upper() + sentence[1:]


def summarise(
    title: str, text: str, max_chars: int, keywords: re.Pattern[str] | None = None
) -> str:
    """The most salient sentences, in text order, in at most ``max_chars``.

    A sentence scores for naming the category's keywords, for an action
    ("approved", "reaffirmed", "acquire"), for a figure and for coming early.
    The first sentence that scores well leads; the best of the rest follow as
    space allows. The title stands in when the text has nothing usable.
    """
    candidates = _candidates(body_text(text), keywords)
    if not candidates:
        return shorten(" ".join(title.split()), max_chars)
    ranked = sorted(candidates, key=lambda c: (-c.score, c.position))
    lead = next((c for c in candidates if c.score >= _LEAD_SCORE), ranked[0])
    chosen = [lead]
    used = len(lead.text)
    for candidate in ranked:
        if candidate is lead or candidate.score < 2 or used + 1 + len(candidate.text) > max_chars:
            continue
        chosen.append(candidate)
        used += 1 + len(candidate.text)
    chosen.sort(key=lambda c: c.position)
    return shorten(" ".join(c.text for c in chosen), max_chars)


def _candidates(body: str, keywords: re.Pattern[str] | None) -> list[_Candidate]:
    out: list[_Candidate] = []
    for sentence in sentences(body):
        if _BOILERPLATE_SENTENCE.search(sentence):
            continue
        cleaned = strip_preamble(sentence)
        if len(cleaned.split()) < 5:
            continue
        score = 2 * bool(keywords and keywords.search(cleaned))
        score += 2 * bool(_ACTION.search(cleaned)) + bool(_FIGURE.search(cleaned))
        score += int(len(out) < 3)
        out.append(_Candidate(position=len(out), text=cleaned, score=score))
    return out


def shorten(text: str, max_chars: int) -> str:
    """``text`` cut at a word boundary to at most ``max_chars``, marked with an ellipsis."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    if space > max_chars // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"
