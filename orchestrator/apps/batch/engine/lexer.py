"""Tokens of the formula language, and the error every stage reports.

Names are case-insensitive (``RSI(14)`` is ``rsi(14)``); numbers are
decimal with an optional exponent. Whitespace separates tokens and is
otherwise ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["FormulaError", "Token", "TokenKind", "tokenize"]

KEYWORDS = frozenset({"and", "or", "not"})


class FormulaError(ValueError):
    """A formula that cannot be parsed or checked, with the column at fault."""

    def __init__(self, message: str, text: str, position: int) -> None:
        self.message = message
        self.text = text
        self.position = position  # 0-based offset into text
        super().__init__(str(self))

    @property
    def column(self) -> int:
        return self.position + 1

    def __str__(self) -> str:
        pointer = " " * self.position + "^"
        return f"{self.message} (column {self.column})\n  {self.text}\n  {pointer}"

    def __reduce__(self) -> tuple[type[FormulaError], tuple[str, str, int]]:
        return (type(self), (self.message, self.text, self.position))


class TokenKind(StrEnum):
    NUMBER = "number"
    NAME = "name"
    KEYWORD = "keyword"
    OP = "operator"
    END = "end of formula"


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str
    position: int


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|==|!=|[<>+\-*/(),\[\]])
    """,
    re.VERBOSE,
)


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an END token."""
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise FormulaError(_bad_character(text, position), text, position)
        kind = match.lastgroup
        word = match.group()
        if kind == "number":
            tokens.append(Token(TokenKind.NUMBER, word, position))
        elif kind == "name":
            lowered = word.lower()
            is_keyword = lowered in KEYWORDS
            tokens.append(
                Token(TokenKind.KEYWORD if is_keyword else TokenKind.NAME, lowered, position)
            )
        elif kind == "op":
            tokens.append(Token(TokenKind.OP, word, position))
        position = match.end()
    tokens.append(Token(TokenKind.END, "", len(text)))
    return tokens


def _bad_character(text: str, position: int) -> str:
    char = text[position]
    hints = {
        "=": "use '==' to compare for equality",
        "&": "use 'and'",
        "|": "use 'or'",
        "!": "use 'not' or '!='",
    }
    hint = hints.get(char)
    return f"unexpected character {char!r}" + (f": {hint}" if hint else "")
