"""Amounts, percentages and dates stated in an announcement, normalised.

Amounts: ``Rs. 2,35,481 crore``, ``₹ 21 per share``, ``INR 12.5 lakh``,
``Rs.10/-``, ``USD 1.2 billion``, ``$250 mn``, ``5,000 crore`` (crore and lakh
imply rupees) become a number of units and an ISO currency code; Indian digit
grouping (``2,35,481``) is understood. Dates: ``15th August, 2024``,
``August 15, 2024``, ``15-Aug-24``, ``15.08.2024`` (day first, as written in
India), ``2024-08-15`` become ISO dates. The words just before a figure give
it a label when they say what it is (``record_date``, ``net_profit``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from decimal import Decimal, InvalidOperation

from orchestrator.apps.announcements.announcement import FigureKind, KeyFigure

__all__ = ["extract_figures"]


def _number(name: str) -> str:
    """A number as written: Indian (2,35,481) or Western (235,481) grouping, or none."""
    return rf"(?P<{name}>\d{{1,3}}(?:,\d{{2,3}})+(?:\.\d+)?|\d+(?:\.\d+)?)"


_UNIT = (
    r"(?:\s*(?P<unit>crores?|cr\b\.?|lakhs?|lacs?|lakh|millions?|mn\b|mio\b|billions?|bn\b"
    r"|thousands?))?"
)
_CURRENCY = r"(?P<cur>₹|rs\.?|re\.|inr|rupees|usd|us\s?\$|\$|eur|€|gbp|£|jpy|¥)"
_AMOUNT = re.compile(
    rf"(?<![\w.]){_CURRENCY}\s*{_number('num')}\s*(?:/-)?{_UNIT}(?!\w)"
    rf"|(?<![\w.,]){_number('num2')}\s*(?P<unit2>crores?|cr\b\.?|lakhs?|lacs?)"
    r"(?:\s*(?P<cur2>rupees|inr))?(?!\w)",
    re.IGNORECASE,
)
_PERCENT = re.compile(r"(?<![\w.,])(?P<num>\d{1,3}(?:\.\d+)?)\s?(?:%|per\s?cent\b)", re.IGNORECASE)

_MONTHS = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
    "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
}  # fmt: skip
_MONTH = (
    r"(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DATES = (
    re.compile(
        rf"\b(?P<d>\d{{1,2}})(?:st|nd|rd|th)?(?:\s+day\s+of)?[\s\-/.]*{_MONTH}"
        r"(?:[\s\-/.,]+|,\s*)(?P<y>\d{4}|\d{2})(?!\d|,\d)",
        re.IGNORECASE,
    ),
    re.compile(
        rf"\b{_MONTH}\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<y>\d{{4}})(?!\d)", re.IGNORECASE
    ),
    re.compile(r"(?<![\d.,/-])(?P<d>\d{1,2})([./-])(?P<m>\d{1,2})\2(?P<y>\d{4})(?![\d.,/-]?\d)"),
    re.compile(r"(?<![\d.,/-])(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})(?![\d])"),
)

_MULTIPLIERS = {
    "crore": 10**7, "cr": 10**7, "lakh": 10**5, "lac": 10**5,
    "million": 10**6, "mn": 10**6, "mio": 10**6, "billion": 10**9, "bn": 10**9,
    "thousand": 10**3,
}  # fmt: skip
_CURRENCIES = {
    "₹": "INR", "rs": "INR", "re": "INR", "inr": "INR", "rupees": "INR",
    "usd": "USD", "us$": "USD", "$": "USD", "eur": "EUR", "€": "EUR",
    "gbp": "GBP", "£": "GBP", "jpy": "JPY", "¥": "JPY",
}  # fmt: skip

_DATE_LABELS = (
    ("record_date", r"record\s+date"),
    ("period_end", r"(?:quarter|half[\s-]year|year|period|months)\s+ended"),
    ("payment_date", r"\b(?:paid|payable|payment|credited|dispatch\w*|disburs\w*)\b"),
    ("meeting_date", r"\b(?:meeting|held\s+on|scheduled|convened)\b"),
    ("effective_date", r"\b(?:effective|w\.e\.f|with\s+effect)\b"),
    ("trading_window", r"trading\s+window"),
    ("order_date", r"\border\s+dated\b"),
    ("announcement_date", r"^\s*dated?\s*:?\s*$"),
    ("transaction_date", r"date\s+of\s+(?:acquisition|sale|allotment|transaction)"),
)
_DATE_LABEL_AFTER = re.compile(
    r"[\s,]*(?:\(\w+\)\s*)?(?:as|being)\s+(?:the\s+)?(record\s+date|cut-?off\s+date|"
    r"date\s+of\s+payment|payment\s+date)",
    re.IGNORECASE,
)
_AFTER_LABELS = {"record": "record_date", "cut": "record_date"}
_AMOUNT_LABELS = (
    ("dividend", r"dividend"),
    ("revenue", r"\b(?:revenue|total\s+income|turnover|sales)\b"),
    ("net_profit", r"\b(?:net\s+profit|profit\s+after\s+tax|pat)\b"),
    ("net_loss", r"\b(?:net\s+loss|loss\s+after\s+tax|loss)\b"),
    ("ebitda", r"\bebitda\b"),
    ("consideration", r"\b(?:consideration|purchase\s+price|enterprise\s+value|valuation|deal)\b"),
    ("face_value", r"face\s+value|\bshares?\s+of\s*$"),
    ("debt", r"\b(?:debentures?|ncds?|bonds?|commercial\s+paper|facilit\w+|borrowings?|loans?)\b"),
    ("debt", r"\bcertificates?\s+of\s+deposit\b|\bdebt\s+programme\b"),
    ("transaction_value", r"\b(?:value|worth|aggregating|amounting)\b"),
)
_LABEL_WINDOW = 60
_CONTEXT_BREAK = re.compile(r"(?<![\s.][A-Za-z])[.;]\s+(?=[A-Z])|\n\s*\n|\n(?=[A-Z][\w ]{0,40}:)")
_MAX_FIGURES = 25


def extract_figures(text: str, limit: int = _MAX_FIGURES) -> tuple[KeyFigure, ...]:
    """Every amount, percentage and date in ``text``, in order, each value once."""
    found: list[tuple[int, int, KeyFigure]] = []
    for start, end, figure in _all_matches(text):
        if any(start < e and s < end for s, e, _ in found):
            continue  # overlaps a figure found by an earlier pattern
        found.append((start, end, figure))
    found.sort(key=lambda item: item[0])
    seen: set[tuple[str, float | str, str | None]] = set()
    out: list[KeyFigure] = []
    for _, _, figure in found:
        key = (figure.kind.value, figure.value, figure.currency)
        if key not in seen:
            seen.add(key)
            out.append(figure)
    return tuple(out[:limit])


def _all_matches(text: str) -> Iterator[tuple[int, int, KeyFigure]]:
    for pattern in _DATES:
        for m in pattern.finditer(text):
            iso = _date_value(m)
            if iso is not None:
                label = _date_label_after(text, m.end()) or _label(text, m.start(), _DATE_LABELS)
                yield m.start(), m.end(), KeyFigure(FigureKind.DATE, iso, m.group(0), label=label)
    for m in _AMOUNT.finditer(text):
        amount = _amount_value(m)
        if amount is not None:
            value, currency = amount
            label = _label(text, m.start(), _AMOUNT_LABELS)
            figure = KeyFigure(FigureKind.AMOUNT, value, m.group(0).strip(), currency, label)
            yield m.start(), m.end(), figure
    for m in _PERCENT.finditer(text):
        yield m.start(), m.end(), KeyFigure(FigureKind.PERCENT, float(m["num"]), m.group(0))


def _amount_value(m: re.Match[str]) -> tuple[float, str] | None:
    number = m["num"] or m["num2"]
    unit = (m["unit"] or m["unit2"] or "").lower().rstrip(".")
    currency = (m["cur"] or m["cur2"] or "rupees").lower().rstrip(".").replace(" ", "")
    try:
        value = Decimal(number.replace(",", ""))
    except InvalidOperation:
        return None
    multiplier = next((v for k, v in _MULTIPLIERS.items() if unit.startswith(k)), 1)
    amount = float(round(value * multiplier, 2))
    return (amount, _CURRENCIES[currency]) if amount > 0 else None


def _date_value(m: re.Match[str]) -> str | None:
    groups = m.groupdict()
    day = int(groups["d"])
    month = _MONTHS[groups["mon"][:3].lower()] if groups.get("mon") else int(groups["m"])
    year = int(groups["y"])
    if year < 100:
        year += 2000
    if not groups.get("mon") and month > 12 >= day:
        day, month = month, day  # month/day/year as written abroad
    if not 1990 <= year <= 2100:
        return None
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return None


def _label(text: str, start: int, labels: tuple[tuple[str, str], ...]) -> str | None:
    """The label whose keyword ends closest before ``start``, in the same sentence."""
    window = text[max(0, start - _LABEL_WINDOW) : start]
    window = _CONTEXT_BREAK.split(window)[-1].lower()
    best: tuple[int, str] | None = None
    for label, pattern in labels:
        for m in re.finditer(pattern, window):
            if best is None or m.end() > best[0]:
                best = (m.end(), label)
    return best[1] if best else None


def _date_label_after(text: str, end: int) -> str | None:
    """For "fixed Tuesday, October 29, 2024 as the Record Date": the label follows the date."""
    m = _DATE_LABEL_AFTER.match(text, end)
    if m is None:
        return None
    return _AFTER_LABELS.get(m[1].split()[0].lower().split("-")[0], "payment_date")
