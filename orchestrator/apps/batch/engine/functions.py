"""The functions a formula may call: their arguments and how they compute.

A call is ``name([source,] param, ...)``. ``source`` is any numeric
expression (``close`` when left out); the parameters are numbers (or job
parameters) known when the formula is parsed, with TA-Lib's defaults where
TA-Lib has one. ``crosses_above(a, b)`` and ``crosses_below(a, b)`` take two
numeric expressions and are true/false.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from orchestrator.apps.batch.engine import indicators as ta
from orchestrator.apps.batch.engine.indicators import Array

__all__ = ["FUNCTIONS", "FunctionSpec", "Param"]

Outputs = tuple[npt.NDArray[Any], ...]
Compute = Callable[..., Outputs]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    default: float | None = None  # None: must be given
    integer: bool = True
    minimum: float = 1.0


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    name: str
    family: str  # calls of one family with equal arguments are computed once
    compute: Compute  # (*series, *params) -> outputs of the family
    output: int = 0  # which output of the family this function is
    sources: int = 1  # numeric expressions before the parameters
    columns: tuple[str, ...] = ()  # fixed column inputs instead of sources
    params: tuple[Param, ...] = ()
    boolean: bool = False  # outputs are (true, false) masks

    @property
    def signature(self) -> str:
        names = [p.name if p.default is None else f"{p.name}={p.default:g}" for p in self.params]
        if self.sources == 1:
            names.insert(0, "[source,]")
        elif self.sources == 2:
            names[:0] = ["a", "b"]
        return f"{self.name}({', '.join(names).replace(',], ', ',] ')})"


def _one(fn: Callable[..., Array]) -> Compute:
    return lambda *args: (fn(*args),)


def _crosses(a: Array, b: Array) -> Outputs:
    """(true, false) masks of ``a`` crossing above ``b`` at each bar."""
    above = a > b
    defined = ~(np.isnan(a) | np.isnan(b))
    true = np.zeros(len(a), dtype=bool)
    known = np.zeros(len(a), dtype=bool)
    true[1:] = above[1:] & ~above[:-1]
    known[1:] = defined[1:] & defined[:-1]
    return true & known, ~true & known


def _crosses_below(a: Array, b: Array) -> Outputs:
    return _crosses(-a, -b)


_PERIOD = Param("period")
_MACD = (Param("fast", 12), Param("slow", 26), Param("signal", 9))
_BBANDS = (Param("period", 5), Param("nbdev", 2.0, integer=False, minimum=0.0))

_SPECS = (
    FunctionSpec("sma", "sma", _one(ta.sma), params=(_PERIOD,)),
    FunctionSpec("ema", "ema", _one(ta.ema), params=(_PERIOD,)),
    FunctionSpec("rsi", "rsi", _one(ta.rsi), params=(Param("period", 14),)),
    FunctionSpec("macd", "macd", ta.macd, 0, params=_MACD),
    FunctionSpec("macd_signal", "macd", ta.macd, 1, params=_MACD),
    FunctionSpec("macd_hist", "macd", ta.macd, 2, params=_MACD),
    FunctionSpec("bbands_upper", "bbands", ta.bbands, 0, params=_BBANDS),
    FunctionSpec("bbands_middle", "bbands", ta.bbands, 1, params=_BBANDS),
    FunctionSpec("bbands_lower", "bbands", ta.bbands, 2, params=_BBANDS),
    FunctionSpec(
        "atr",
        "atr",
        _one(ta.atr),
        sources=0,
        columns=("high", "low", "close"),
        params=(Param("period", 14),),
    ),
    FunctionSpec("highest", "highest", _one(ta.highest), params=(_PERIOD,)),
    FunctionSpec("lowest", "lowest", _one(ta.lowest), params=(_PERIOD,)),
    FunctionSpec("roc", "roc", _one(ta.roc), params=(Param("period", 10),)),
    FunctionSpec("crosses_above", "crosses_above", _crosses, sources=2, boolean=True),
    FunctionSpec("crosses_below", "crosses_below", _crosses_below, sources=2, boolean=True),
)

FUNCTIONS: Mapping[str, FunctionSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})


def describe_all() -> str:
    """One line per function, for error messages and docs."""
    return "; ".join(spec.signature for spec in _SPECS)
