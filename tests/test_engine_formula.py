"""The formula language: what parses, what it means, and how it refuses."""

from __future__ import annotations

import pickle

import pytest

from orchestrator.apps.batch.engine import FormulaError, parse_formula
from orchestrator.apps.batch.engine.formula import MAX_LENGTH, MAX_NESTING, MAX_NODES, render
from orchestrator.apps.batch.engine.functions import FUNCTIONS
from orchestrator.apps.batch.engine.lexer import TokenKind, tokenize


def canonical(text: str, **parameters: float) -> str:
    return render(parse_formula(text, parameters).root)


def test_the_example_from_the_issue() -> None:
    formula = parse_formula("rsi(14) < 30 and close > sma(200) and volume > 2 * sma(volume, 20)")
    assert [render(c) for c in formula.indicators] == [
        "rsi(close, 14)",
        "sma(close, 200)",
        "sma(volume, 20)",
    ]
    assert render(formula.root) == (
        "(((rsi(close, 14) < 30) and (close > sma(close, 200)))"
        " and (volume > (2 * sma(volume, 20))))"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("close > 1 or open > 1 and high > 1", "((close > 1) or ((open > 1) and (high > 1)))"),
        ("not close > 1 and open > 1", "(not (close > 1) and (open > 1))"),
        ("not not close > 1", "not not (close > 1)"),
        ("close - open * 2 > 1", "((close - (open * 2)) > 1)"),
        ("(close - open) * 2 > 1", "(((close - open) * 2) > 1)"),
        ("close / open / 2 > 1", "(((close / open) / 2) > 1)"),
        ("-close < -1", "(-close < -1)"),
        ("close > 2 * 3 + 1", "(close > 7)"),  # constants fold
        ("RSI(14) < 30 AND Close > 1", "((rsi(close, 14) < 30) and (close > 1))"),
        ("close >= 1.5e2", "(close >= 150)"),
        ("close != .5", "(close != 0.5)"),
    ],
)
def test_precedence_and_canonical_form(text: str, expected: str) -> None:
    assert canonical(text) == expected


@pytest.mark.parametrize(
    ("text", "indicator"),
    [
        ("rsi() < 30", "rsi(close, 14)"),
        ("macd_hist() > 0", "macd_hist(close, 12, 26, 9)"),
        ("macd_signal(5, 35) > 0", "macd_signal(close, 5, 35, 9)"),
        ("close > bbands_upper(20)", "bbands_upper(close, 20, 2)"),
        ("close > bbands_upper()", "bbands_upper(close, 20, 2)"),
        ("stddev(close, 20) > 1", "stddev(close, 20, 1)"),
        ("wma(9) > 1", "wma(close, 9)"),
        ("adx() > 25", "adx(14)"),
        ("plus_di() > 1", "plus_di(14)"),
        ("stoch_k() > 80", "stoch_k(5, 3, 3)"),
        ("stoch_d(14) > 80", "stoch_d(14, 3, 3)"),
        ("close > vwap()", "vwap(0)"),
        ("abs(close - open) > 1", "abs(close - open)"),
        ("max(open, close) > 1", "max(open, close)"),
        ("min(close, 5) > 1", "min(close, 5)"),
        ("close[1] > 1", "shift(close, 1)"),
        ("shift() > 1", "shift(close, 1)"),
        ("close > bbands_lower(close, 20, 1.5)", "bbands_lower(close, 20, 1.5)"),
        ("atr() > 1", "atr(14)"),
        ("roc(high) > 1", "roc(high, 10)"),
        ("close > highest(high, 20)", "highest(high, 20)"),
        ("close < lowest(20)", "lowest(close, 20)"),
        ("ema(close - open, 5) > 0", "ema(close - open, 5)"),
    ],
)
def test_defaults_are_filled_in(text: str, indicator: str) -> None:
    assert [render(c) for c in parse_formula(text).indicators] == [indicator]


def test_nested_and_repeated_indicators_are_listed_once_in_order() -> None:
    formula = parse_formula(
        "sma(rsi(14), 5) > 50 and rsi(14) > 50 and crosses_above(ema(9), ema(21))"
    )
    assert [render(c) for c in formula.indicators] == [
        "sma(rsi(close, 14), 5)",
        "rsi(close, 14)",
        "ema(close, 9)",
        "ema(close, 21)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("close > close[1]", "(close > shift(close, 1))"),
        ("close > highest(high, 20)[1]", "(close > shift(highest(high, 20), 1))"),
        ("(close - open)[2] > 0", "(shift(close - open, 2) > 0)"),
        ("close[1][1] > close[2]", "(shift(shift(close, 1), 1) > shift(close, 2))"),
        ("-close[1] < 0", "(-shift(close, 1) < 0)"),
        ("close[n] > close[2 * n]", "(shift(close, 3) > shift(close, 6))"),
    ],
)
def test_a_lag_is_a_shift_of_any_series(text: str, expected: str) -> None:
    assert canonical(text, n=3) == expected


def test_every_function_is_described_with_its_defaults() -> None:
    described = {spec.signature for spec in FUNCTIONS.values()}
    assert "bbands_upper([source,] period=20, nbdev=2)" in described
    assert "rsi([source,] period=14)" in described
    assert "abs(source)" in described and "max(a, b)" in described
    assert "shift([source,] bars=1)" in described


def test_formulas_at_the_limits_parse_and_beyond_them_say_which_limit() -> None:
    parse_formula("(" * MAX_NESTING + "close > 1" + ")" * MAX_NESTING)
    with pytest.raises(FormulaError) as deep:
        parse_formula("(" * 500 + "close > 1" + ")" * 500)  # once a RecursionError
    assert f"limit {MAX_NESTING}" in deep.value.message and deep.value.column == MAX_NESTING + 1
    with pytest.raises(FormulaError, match=f"limit {MAX_NESTING}"):
        parse_formula("sma(" * 40 + "close" + ", 2)" * 40 + " > 1")
    with pytest.raises(FormulaError, match=f"limit {MAX_NESTING}"):
        parse_formula("not " * 40 + "close > 1")
    with pytest.raises(FormulaError) as large:
        parse_formula(" and ".join(["close > open"] * 100))  # once a failure in the engine
    assert f"limit {MAX_NODES}" in large.value.message and large.value.position > 0
    with pytest.raises(FormulaError) as long:
        parse_formula(" and ".join(["close > 1"] * 500))
    assert f"limit {MAX_LENGTH}" in long.value.message and long.value.position == MAX_LENGTH


def test_parameters_are_numbers_the_formula_names() -> None:
    formula = parse_formula("rsi(n) < limit and close > sma(2 * n)", {"n": 10, "limit": 25})
    assert render(formula.root) == "((rsi(close, 10) < 25) and (close > sma(close, 20)))"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"close": 1}, "not allowed"),
        ({"and": 1}, "not allowed"),
        ({"sma": 1}, "not allowed"),
        ({"n": "14"}, "must be a number"),
        ({"n": True}, "must be a number"),
    ],
)
def test_bad_parameters_are_refused(parameters: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_formula("close > 1", parameters)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("", "the formula is empty", 1),
        ("closee > 1", "unknown name 'closee' (did you mean 'close'?)", 1),
        ("close > smaa(20)", "unknown function 'smaa' (did you mean 'sma'?)", 9),
        ("close > foo(20)", "unknown function 'foo' (known: sma([source,] period)", 9),
        ("close(1) > 2", "a column is not a function", 1),
        ("close > sma", "'sma' is a function: call it as sma([source,] period)", 9),
        ("sma() > 1", "sma() needs its period: sma([source,] period)", 1),
        ("sma(close, 20, 3) > 1", "too many arguments: sma([source,] period)", 16),
        ("sma(20, 3) > 1", "too many arguments", 9),
        ("sma(close, 2.5) > 1", "the period of sma() must be a whole number", 12),
        ("sma(close, 0) > 1", "the period of sma() must be >= 1, got 0", 12),
        ("rsi(1) < 30", "the period of rsi() must be >= 2, got 1", 5),
        ("sma(close, 200000) > 1", "the period of sma() must be <= 100000, got 200000", 12),
        ("abs() > 1", "abs() needs an argument: abs(source)", 1),
        ("max(close) > 1", "max() needs 2 arguments: max(a, b)", 1),
        ("close[1.5] > 1", "the bars of shift() must be a whole number", 7),
        ("close[volume] > 1", "the bars of shift() must be a number known in advance", 7),
        ("close[-1] > 1", "the bars of shift() must be >= 0, got -1", 7),
        ("(close > 1)[1]", "'[...]' (a lag) needs a number, got a condition", 2),
        ("close[1 > 1", "expected ']' to close the '['", 12),
        ("sma(close, volume) > 1", "the period of sma() must be a number known in advance", 12),
        ("sma(close > 1, 5) > 1", "sma() needs a number, got a condition", 5),
        ("crosses_above(close) ", "crosses_above() needs 2 arguments", 1),
        ("crosses_above(close, 1) > 1", "'>' needs a number, got a condition", 1),
        ("close", "a formula must be a condition (true/false)", 1),
        ("close + 1", "a formula must be a condition", 1),
        ("close > 1 and 2", "'and' needs a condition (true/false), got a number", 15),
        ("close or open > 1", "'or' needs a condition (true/false), got a number", 1),
        ("not close", "'not' needs a condition", 5),
        ("(close > 1) + 1 > 2", "'+' needs a number, got a condition", 2),
        ("1 < close < 2", "comparisons do not chain", 11),
        ("close > ", "expected a number, a name or '(', found the end of the formula", 9),
        ("close > 1)", "unexpected ')' after a complete expression", 10),
        ("(close > 1", "expected ')' to close the '(', found the end of the formula", 11),
        ("sma(close, 5 > 1", "expected ')' to close the call of sma", 17),
        ("close = 1", "unexpected character '=': use '==' to compare for equality", 7),
        ("close > 1 && open > 1", "unexpected character '&': use 'and'", 11),
        ("close > 1 / 0", "division by zero", 11),
        ("__import__('os').system('true')", 'unexpected character "\'"', 12),
    ],
)
def test_errors_say_what_and_where(text: str, message: str, column: int) -> None:
    with pytest.raises(FormulaError) as caught:
        parse_formula(text)
    assert message in caught.value.message
    assert caught.value.column == column


def test_an_error_points_at_its_column() -> None:
    with pytest.raises(FormulaError) as caught:
        parse_formula("rsi(14) < 30 and close > smaa(200)")
    lines = str(caught.value).splitlines()
    assert lines[0] == "unknown function 'smaa' (did you mean 'sma'?) (column 26)"
    assert lines[1] == "  rsi(14) < 30 and close > smaa(200)"
    assert lines[2] == "  " + " " * 25 + "^"


def test_errors_and_formulas_pickle() -> None:
    formula = parse_formula("crosses_above(ema(9), ema(21)) and rsi() > 50")
    assert pickle.loads(pickle.dumps(formula)) == formula
    error = FormulaError("boom", "close >", 7)
    again = pickle.loads(pickle.dumps(error))
    assert (again.message, again.text, again.position) == ("boom", "close >", 7)


def test_tokens() -> None:
    tokens = tokenize("sma(close,20)>=1.5")
    assert [(t.kind, t.text, t.position) for t in tokens] == [
        (TokenKind.NAME, "sma", 0),
        (TokenKind.OP, "(", 3),
        (TokenKind.NAME, "close", 4),
        (TokenKind.OP, ",", 9),
        (TokenKind.NUMBER, "20", 10),
        (TokenKind.OP, ")", 12),
        (TokenKind.OP, ">=", 13),
        (TokenKind.NUMBER, "1.5", 15),
        (TokenKind.END, "", 18),
    ]
