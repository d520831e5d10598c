"""Evaluate a parsed formula over candles, all bars at once.

Numbers are float64 arrays (NaN while an indicator warms up) or plain
floats. Conditions use three-valued logic: a comparison with a NaN side is
*unknown*, not false, so ``not (rsi(14) < 30)`` does not match during the
warm-up, while ``x or y`` is true as soon as one side is (Kleene logic,
as in SQL). A bar matches where the formula is known to be true.

A failure is reported, never a traceback: one caused by the formula itself
(too deep for this process' stack) is a ``FormulaError`` (the batch
fails: every symbol would fail alike); one while computing a function on
this symbol's data is an ``EvaluationError`` naming the call (that
symbol's error).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from orchestrator.apps.batch.engine.candles import Candles
from orchestrator.apps.batch.engine.formula import (
    Binary,
    Call,
    Column,
    Formula,
    Node,
    Number,
    Unary,
    render,
)
from orchestrator.apps.batch.engine.indicators import Array
from orchestrator.apps.batch.engine.lexer import FormulaError

__all__ = ["Evaluation", "EvaluationError", "Truth", "evaluate"]

Mask = npt.NDArray[np.bool_]

_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


class EvaluationError(ValueError):
    """A function failed on one symbol's data; the message names the call."""


@dataclass(frozen=True, slots=True)
class Truth:
    """A condition per bar: known true, known false, or neither (unknown)."""

    true: Mask
    false: Mask

    def __invert__(self) -> Truth:
        return Truth(self.false, self.true)

    def __and__(self, other: Truth) -> Truth:
        return Truth(self.true & other.true, self.false | other.false)

    def __or__(self, other: Truth) -> Truth:
        return Truth(self.true | other.true, self.false & other.false)


Value = Array | float | Truth


@dataclass(frozen=True, slots=True)
class Evaluation:
    matches: Mask  # per bar: the formula is known to be true
    indicators: dict[str, float | None]  # last value of each indicator
    series: dict[str, Array]  # every value of each indicator (stays in the worker)


def evaluate(formula: Formula, candles: Candles) -> Evaluation:
    evaluator = _Evaluator(candles)
    try:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            truth = evaluator.value(formula.root)
            series = {render(c): _series(evaluator.value(c)) for c in formula.indicators}
    except RecursionError:
        raise FormulaError(
            "the formula is nested too deep to evaluate here: simplify it", formula.text, 0
        ) from None
    if not isinstance(truth, Truth):  # parse_formula guarantees a condition
        raise TypeError(f"formula {formula.text!r} is not a condition")
    indicators = {name: _last(values) for name, values in series.items()}
    return Evaluation(truth.true, indicators, series)


def _series(value: Value) -> Array:
    if isinstance(value, Truth) or not isinstance(value, np.ndarray):
        raise TypeError("an indicator is a number series")
    return value


def _last(values: Array) -> float | None:
    last = float(values[-1]) if len(values) else float("nan")
    return None if np.isnan(last) else last


class _Evaluator:
    def __init__(self, candles: Candles) -> None:
        self.candles = candles
        self.size = len(candles)
        self.families: dict[str, tuple[npt.NDArray[Any], ...]] = {}  # computed indicator outputs

    def value(self, node: Node) -> Value:
        if isinstance(node, Number):
            return node.value
        if isinstance(node, Column):
            return self.candles.column(node.name)
        if isinstance(node, Unary):
            operand = self.value(node.operand)
            return ~operand if isinstance(operand, Truth) else -_number(operand)
        if isinstance(node, Binary):
            return self._binary(node)
        return self._call(node)

    def _column(self, name: str) -> npt.NDArray[Any]:
        return self.candles.timestamp if name == "timestamp" else self.candles.column(name)

    def _binary(self, node: Binary) -> Value:
        left, right = self.value(node.left), self.value(node.right)
        if node.op == "and":
            return _truth(left) & _truth(right)
        if node.op == "or":
            return _truth(left) | _truth(right)
        a, b = _number(left), _number(right)
        if node.op in _ARITHMETIC:
            return _array_or_float(_ARITHMETIC[node.op](a, b))
        result = np.broadcast_to(np.asarray(_COMPARE[node.op](a, b), dtype=bool), (self.size,))
        known = np.broadcast_to(~(np.isnan(a) | np.isnan(b)), (self.size,))
        return Truth(result & known, ~result & known)

    def _call(self, node: Call) -> Value:
        spec = node.spec
        inputs = [_as_array(_number(self.value(s)), self.size) for s in node.sources]
        inputs += [self._column(name) for name in spec.columns]
        key = render(Call(spec.family, node.sources, node.params, 0))  # macd_hist -> macd(...)
        outputs = self.families.get(key)
        if outputs is None:
            args = [
                int(v) if p.integer else v for p, v in zip(spec.params, node.params, strict=True)
            ]
            try:
                outputs = spec.compute(*inputs, *args)
            except RecursionError:
                raise  # the formula's fault, not the data's: see evaluate
            except Exception as exc:  # TA-Lib raises plain Exception
                raise EvaluationError(f"{render(node)}: {type(exc).__name__}: {exc}") from None
            self.families[key] = outputs
        if spec.boolean:
            return Truth(outputs[0], outputs[1])
        result: Array = outputs[spec.output]
        return result


def _truth(value: Value) -> Truth:
    if not isinstance(value, Truth):
        raise TypeError("expected a condition")
    return value


def _number(value: Value) -> Array | float:
    if isinstance(value, Truth):
        raise TypeError("expected a number")
    return value


def _array_or_float(value: object) -> Array | float:
    if isinstance(value, np.ndarray):
        return value.astype(np.float64, copy=False)
    return float(value)  # type: ignore[arg-type]


def _as_array(value: Array | float, size: int) -> Array:
    if isinstance(value, np.ndarray):
        return value
    return np.full(size, value, dtype=np.float64)
