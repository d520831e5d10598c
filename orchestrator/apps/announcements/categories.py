"""Which kind of announcement this is, by weighted phrase rules.

Each rule is a phrase pattern with a weight for one category. A rule counts
once however often it matches; matching in the title counts double, since
BSE/NSE titles ("Intimation of Record Date for Dividend", "Disclosure under
Regulation 7(2) of SEBI (PIT)") say the most. The category with the highest
score wins if it reaches ``_MIN_SCORE``; otherwise the announcement is
``other``. The weights encode the traps of exchange filings: an intimation
of a board meeting *to consider* results is a board meeting, an outcome that
*approved* results is financial results, and a SAST disclosure (Substantial
*Acquisition* of Shares and *Takeovers*) is insider trading, not a merger.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestrator.apps.announcements.announcement import Category

__all__ = ["Rule", "classify", "keyword_pattern", "scores"]

_MIN_SCORE = 4
_TITLE_FACTOR = 2
_TIE_ORDER = (
    Category.INSIDER_TRADING,
    Category.CREDIT_RATING,
    Category.ACQUISITION_MERGER,
    Category.DIVIDEND,
    Category.FINANCIAL_RESULTS,
    Category.BOARD_MEETING,
)


@dataclass(frozen=True, slots=True)
class Rule:
    category: Category
    pattern: re.Pattern[str]
    weight: int


def _rules(category: Category, *entries: tuple[str, int], case: bool = False) -> list[Rule]:
    flags = 0 if case else re.IGNORECASE
    return [Rule(category, re.compile(p, flags), w) for p, w in entries]


_R, _D, _B = Category.FINANCIAL_RESULTS, Category.DIVIDEND, Category.BOARD_MEETING
_A, _I, _C = Category.ACQUISITION_MERGER, Category.INSIDER_TRADING, Category.CREDIT_RATING

RULES: tuple[Rule, ...] = tuple(
    _rules(
        _R,
        (r"\bfinancial\s+results?\b", 3),
        (r"\b(?:un)?audited\s+(?:standalone\s+|consolidated\s+|and\s+)*financial\s+results?", 3),
        (r"results?\s+for\s+the\s+(?:quarter|half[\s-]year|year|nine\s+months|period)", 3),
        (r"\b(?:approved|adopted|took\s+on\s+record)\b.{0,80}\b(?:financial\s+)?results\b", 4),
        (r"\brevenue\s+from\s+operations\b|\btotal\s+income\b", 2),
        (r"\bnet\s+(?:profit|loss)\b|\bprofit\s+(?:after|before)\s+tax\b|\bPAT\b", 2),
        (r"\bEBITDA\b|\boperating\s+(?:profit|margin)\b", 2),
        (r"\bearnings\s+per\s+share\b|\bEPS\b", 2),
        (r"\blimited\s+review\s+report\b", 2),
        (r"\bQ[1-4]\s?(?:FY)?\s?'?\d{2}\b|\bquarterly\s+results\b", 2),
    )
    + _rules(
        _D,
        (r"\bdividends?\b", 3),
        (r"\b(?:interim|final|special)\s+dividend\b", 3),
        (r"\brecord\s+date\b", 1),
        (r"\bbook\s+closure\b", 1),
        (r"\bdividend\b.{0,60}\bper\s+(?:equity\s+)?share\b", 2),
        (r"\bpayment\s+of\s+(?:the\s+)?dividend\b|\bdividend\s+(?:will|shall)\s+be\s+paid", 2),
    )
    + _rules(
        _B,
        (r"\bboard\s+meeting\b", 2),
        (r"\bmeeting\s+of\s+the\s+board\b", 2),
        (r"\b(?:intimation|notice)\s+of\s+(?:the\s+)?(?:board\s+)?meeting\b", 5),
        (r"\bboard\s+meeting\s+intimation\b|\bprior\s+intimation\b", 5),
        (r"\b(?:is|are|has\s+been)\s+scheduled\s+to\s+be\s+held\b|\bwill\s+be\s+held\s+on\b", 3),
        (r"\bto\s+consider\s+and\s+(?:approve|take\s+on\s+record)", 4),
        (r"\binter\s+alia,?\s+to\s+consider", 2),
        (r"\boutcome\s+of\s+(?:the\s+)?board\s+meeting\b", 1),
        (r"\b(?:re-?)?appointment\s+of\b|\bresignation\s+of\b", 1),
        (r"\bfund[\s-]?raising\b|\bqualified\s+institutions?\s+placement\b", 2),
        (r"\bpreferential\s+issue\b|\brights\s+issue\b", 2),
        (r"\bmeeting\s+(?:of\s+the\s+board\s+)?(?:commenced|concluded)\b", 1),
    )
    + _rules(
        _A,
        (r"(?<!substantial\s)\bacquisitions?\b(?!\s+of\s+(?:equity\s+)?shares\s+(?:by|and))", 3),
        (r"\bacquir(?:e|ed|es|ing)\b", 2),
        (r"\bamalgamation\b", 4),
        (r"\bscheme\s+of\s+(?:arrangement|amalgamation|merger|demerger)\b", 5),
        (r"\bmerg(?:er|e|ed|ing)\b|\bdemerger\b", 4),
        (r"\bshare\s+(?:purchase|subscription)\s+agreement\b|\bbusiness\s+transfer\b", 3),
        (r"\bdefinitive\s+agreements?\b|\bbinding\s+term\s+sheet\b", 3),
        (r"\bNCLT\b|\bNational\s+Company\s+Law\s+Tribunal\b", 2),
        (r"\b(?:stake|equity\s+interest)\b", 2),
        (r"\bjoint\s+venture\b|\bwholly[\s-]owned\s+subsidiary\b|\bstep[\s-]down\s+subsidiary", 1),
        (r"\b(?:cash\s+)?consideration\b|\benterprise\s+value\b|\bswap\s+ratio\b", 2),
    )
    + _rules(
        _I,
        (r"\binsider\s+trading\b", 5),
        (r"\bprohibition\s+of\s+insider\s+trading\b|\bPIT\b", 6),
        (r"\bsubstantial\s+acquisition\s+of\s+shares\s+and\s+takeovers\b|\bSAST\b", 6),
        (r"\bregulation\s+(?:7\s*\(\s*[12]\s*\)|29\s*\(\s*[12]\s*\)|31\s*\(\s*[1-3]\s*\))", 4),
        (r"\bdesignated\s+persons?\b|\bimmediate\s+relatives?\b|\bpromoter\s+group\b", 2),
        (r"\btrading\s+window\b", 3),
        (r"\b(?:pledge|encumbrance|invocation)\b|\bencumbered\b", 3),
        (r"\bform\s+[CD]\b|\bopen\s+market\b|\bcontinual\s+disclosure\b", 2),
    )
    + _rules(
        _C,
        (r"\bcredit\s+ratings?\b", 5),
        (r"\bratings?\b", 2),
        (r"\b(?:reaffirm(?:ed|s)?|upgrad(?:e|ed|es)|downgrad(?:e|ed|es))\b", 2),
        (r"\brating\s+watch\b|\boutlook\b", 1),
        (r"\bbank\s+(?:loan\s+)?facilities\b|\bcommercial\s+paper\b|\bfixed\s+deposits?\b", 1),
    )
    + _rules(
        _C,
        (r"\bCRISIL\b|\bICRA\b|\bCARE\s+(?:Ratings|Edge|A|AA|AAA|BBB)|\bIndia\s+Ratings\b", 4),
        (r"\bInd-?Ra\b|\bBrickwork\b|\bAcuite\b|\bInfomerics\b|\bMoody'?s\b|\bFitch\b|\bS&P\b", 4),
        (r"(?:\[ICRA\]|CRISIL|CARE|IND|Ind)\s?(?:AAA|AA|A|BBB|A1)\+?-?|\bAAA\b|\bA1\+", 3),
        case=True,
    )
)


def scores(title: str, text: str) -> dict[Category, int]:
    """Each category's score for this announcement; ``other`` is never scored."""
    out = dict.fromkeys(_TIE_ORDER, 0)
    for rule in RULES:
        if rule.pattern.search(title):
            out[rule.category] += rule.weight * _TITLE_FACTOR
        if rule.pattern.search(text):
            out[rule.category] += rule.weight
    return out


def classify(title: str, text: str) -> Category:
    """The best-scoring category, or ``other`` when nothing scores ``_MIN_SCORE``."""
    table = scores(title, text)
    best = max(_TIE_ORDER, key=lambda c: table[c])  # max keeps the first of equals
    return best if table[best] >= _MIN_SCORE else Category.OTHER


_KEYWORDS = {
    _R: r"\bresults\b|\brevenue\b|\bprofit\b|\bloss\b|\bEBITDA\b|\bincome\b",
    _D: r"\bdividend\b|\brecord\s+date\b",
    _B: r"\bboard\b|\bmeeting\b",
    _A: r"\bacqui\w*|\bamalgamat\w*|\bmerg\w*|\bstake\b|\bscheme\b",
    _I: r"\bshares\b|\binsider\b|\bpledge\w*|\bdisclos\w*|\bSAST\b|\bPIT\b",
    _C: r"\brating\w*|\boutlook\b|\bCRISIL\b|\bICRA\b|\bCARE\b",
    Category.OTHER: r"\bannounce\w*|\blaunch\w*|\border\w*|\bappoint\w*",
}


def keyword_pattern(category: Category) -> re.Pattern[str]:
    """Words that make a sentence salient for a summary of this category."""
    return re.compile(_KEYWORDS[category], re.IGNORECASE)
