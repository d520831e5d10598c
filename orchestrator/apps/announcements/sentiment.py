"""A sentiment score in [-1, 1] from a finance word list, for shareholders' eyes.

The word list follows the spirit of Loughran-McDonald (finance words, not
general ones: "liability" is not negative, "loss" is), tuned to Indian
exchange filings. Phrases that only look loaded are neutralised first:
"Statement of Profit and Loss", "Record Date", "closure of the trading
window", "lower of cost", "loss of share certificate". A word within three
words after "no", "not" or "without" counts half, the other way; a word
counts at most twice. The score
is ``(positive - negative) / (positive + negative + 2)``: a few words give a
mild score, many one-sided words approach the ends.
"""

from __future__ import annotations

import re

__all__ = ["sentiment_score"]

_DAMPING = 2.0
_MAX_REPEATS = 2  # a word counts at most twice: long filings repeat their subject

_NEUTRAL = re.compile(
    r"""profit\s*(?:and|&|/)\s*\(?loss\)?|\(loss\)|profit\s*/\s*\(?loss|record\s+date|on\s+record
    |trading\s+window|book\s+closure|(?:higher|lower)\s+of|whichever\s+is\s+(?:higher|lower)
    |loss\s+of\s+(?:share\s+)?certificates?|fall(?:s|ing)?\s+due|no\s+(?:objection|change)
    |negative\s+list|stable\s+(?:and|&)|gain\s+or\s+loss|(?:rating\s+)?watch\s+with\s+developing
    |provision\s+of|provisions\s+of|default\s+(?:interest|rate)|nil\s+default""",
    re.IGNORECASE | re.VERBOSE,
)

_PHRASES: tuple[tuple[str, float], ...] = (
    (r"\bnet\s+loss\b|\bloss\s+after\s+tax\b|\boperating\s+loss\b", -2.0),
    (r"\brecord\s+(?:high|revenue|profit|quarter|growth|order)", 2.0),
    (r"\bhighest\s+ever\b|\ball[\s-]time\s+high\b", 2.0),
    (r"\bup\s+\d+(?:\.\d+)?\s?%|\bgrowth\s+of\s+\d+(?:\.\d+)?\s?%", 1.0),
    (r"\bdown\s+\d+(?:\.\d+)?\s?%|\bdecline\s+of\s+\d+(?:\.\d+)?\s?%", -1.0),
    (r"\boutlook\s+(?:revised\s+)?(?:to\s+)?positive\b|\bpositive\s+outlook\b", 1.5),
    (r"\boutlook\s+(?:revised\s+)?(?:to\s+)?negative\b", -1.5),
    (r"\bnegative\s+(?:outlook|implications)", -1.5),
    (r"\brating\s+watch\b", -0.5),
    (r"\bshow[\s-]cause\s+notice\b|\btax\s+demand\b|\bdemand\s+order\b", -1.5),
    (
        r"\border\s+(?:win|inflow)s?\b|\b(?:received|secured|bagged|won)\s+(?:an?\s+)?(?:new\s+)?orders?\b",
        1.5,
    ),
)

_WORDS: dict[str, float] = {
    # positive
    "growth": 1, "grew": 1, "grow": 1, "grows": 1, "increase": 1, "increased": 1,
    "increases": 1, "rise": 1, "rose": 1, "higher": 1, "improved": 1, "improvement": 1,
    "improve": 1, "strong": 1, "stronger": 1, "robust": 1, "healthy": 1, "upgrade": 2,
    "upgraded": 2, "upgrades": 2, "reaffirmed": 0.5, "reaffirms": 0.5, "reaffirm": 0.5,
    "stable": 0.5, "positive": 1, "gain": 1, "gains": 1, "surge": 1.5, "surged": 1.5,
    "jump": 1, "jumped": 1, "expansion": 1, "expand": 1, "outperform": 1, "outperformed": 1,
    "exceeded": 1, "highest": 1, "success": 1, "successful": 1, "win": 1, "won": 1,
    "award": 0.5, "awarded": 1, "synergies": 1, "synergy": 1, "accretive": 1,
    "dividend": 0.5, "bonus": 0.5, "buyback": 1, "profitable": 1, "profitability": 0.5,
    "momentum": 1, "milestone": 1, "strengthen": 1, "strengthens": 1, "strengthened": 1,
    "resilient": 1, "favourable": 1, "favorable": 1, "upside": 1, "optimistic": 1,
    "approved": 0.25, "completed": 0.5,
    # negative
    "loss": -1, "losses": -1.5, "decline": -1, "declined": -1, "declines": -1,
    "decrease": -1, "decreased": -1, "fall": -1, "fell": -1, "lower": -1, "weak": -1,
    "weaker": -1, "weakness": -1, "downgrade": -2, "downgraded": -2, "downgrades": -2,
    "negative": -1, "default": -2, "defaulted": -2, "defaults": -2, "penalty": -1.5,
    "penalties": -1.5, "litigation": -1, "lawsuit": -1, "dispute": -1, "fraud": -2,
    "resign": -1, "resigned": -1, "resignation": -1, "impairment": -1.5, "write-off": -1.5,
    "stress": -1, "stressed": -1, "delay": -1, "delayed": -1, "suspension": -1.5,
    "suspended": -1.5, "shutdown": -1.5, "strike": -1, "pledge": -0.5, "pledged": -0.5,
    "invoked": -1.5, "invocation": -1.5, "liquidation": -2, "insolvency": -2,
    "bankruptcy": -2, "npa": -1, "slump": -1.5, "slowdown": -1, "headwinds": -1,
    "adverse": -1, "adversely": -1, "deteriorated": -1.5, "deterioration": -1.5,
    "erosion": -1, "contraction": -1, "shortfall": -1, "missed": -1, "warning": -1,
    "investigation": -1, "raid": -1.5, "fire": -1, "accident": -1.5, "disruption": -1,
    "withdrawn": -1, "withdrawal": -0.5, "cancelled": -1, "cancellation": -1,
    "terminated": -1, "termination": -1, "provision": -0.5,
}  # fmt: skip

_NEGATORS = frozenset({"no", "not", "without", "nil", "never", "neither", "nor"})
_WORD = re.compile(r"[a-z][a-z\-']*")
_COMPILED = tuple((re.compile(p, re.IGNORECASE), w) for p, w in _PHRASES)


def sentiment_score(text: str) -> float:
    """Sentiment of ``text`` in [-1, 1], rounded to three places; 0.0 when nothing counts."""
    text = _NEUTRAL.sub(" ", text)
    positive = negative = 0.0
    for pattern, weight in _COMPILED:
        if pattern.search(text):
            positive, negative = _add(positive, negative, weight)
        text = pattern.sub(" ", text)
    words = _WORD.findall(text.lower())
    seen: dict[str, int] = {}
    for i, word in enumerate(words):
        weight = _WORDS.get(word, 0.0)
        seen[word] = seen.get(word, 0) + 1
        if seen[word] > _MAX_REPEATS:
            continue
        if weight and _NEGATORS.intersection(words[max(0, i - 3) : i]):
            weight = -weight / 2
        positive, negative = _add(positive, negative, weight)
    total = positive + negative
    if total == 0:
        return 0.0
    return round(max(-1.0, min(1.0, (positive - negative) / (total + _DAMPING))), 3)


def _add(positive: float, negative: float, weight: float) -> tuple[float, float]:
    if weight > 0:
        return positive + weight, negative
    return positive, negative - weight
