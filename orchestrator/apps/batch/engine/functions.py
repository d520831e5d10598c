"""The functions a formula may call: their arguments and how they compute.

A call is ``name([source,] param, ...)``. ``source`` is any numeric
expression (``close`` when left out, except for ``abs``); the parameters
are numbers (or job parameters) known when the formula is parsed, checked
against TA-Lib's ranges here, so TA-Lib never refuses one at evaluation.
Defaults are TA-Lib's, except Bollinger's 20 periods for ``bbands_*``;
moving averages and windows (``sma``, ``ema``, ``wma``, ``stddev``,
``highest``, ``lowest``) need their period. ``atr``, ``adx``, ``plus_di``,
``minus_di``, ``stoch_*`` and ``vwap`` read the bar's columns themselves.
``min``/``max`` take two numeric expressions; ``crosses_above(a, b)`` and
``crosses_below(a, b)`` too, and are true/false. ``shift(x, n)`` is ``x``
``n`` bars ago, also written ``x[n]``. ``describe_all`` lists them all.
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
    maximum: float = 100_000.0  # TA-Lib's upper bound for every period


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
    implicit_source: bool = True  # one source, ``close`` when left out

    @property
    def signature(self) -> str:
        names = [p.name if p.default is None else f"{p.name}={p.default:g}" for p in self.params]
        if self.sources == 1:
            names.insert(0, "[source,]" if self.implicit_source else "source")
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


def _minmax(fn: Callable[[Array, Array], Array]) -> Compute:
    return lambda a, b: (fn(a, b),)


_PERIOD = Param("period")
_PERIOD2 = Param("period", minimum=2)  # TA-Lib refuses 1 here
_HLC = ("high", "low", "close")
_MACD = (Param("fast", 12, minimum=2), Param("slow", 26, minimum=2), Param("signal", 9))
_BBANDS = (Param("period", 20, minimum=2), Param("nbdev", 2.0, integer=False, minimum=0.0))
_STOCH = (Param("fastk", 5), Param("slowk", 3), Param("slowd", 3))


def _hlc(name: str, fn: Callable[..., Array], period: Param) -> FunctionSpec:
    return FunctionSpec(name, name, _one(fn), sources=0, columns=_HLC, params=(period,))


_SPECS = (
    FunctionSpec("sma", "sma", _one(ta.sma), params=(_PERIOD,)),
    FunctionSpec("ema", "ema", _one(ta.ema), params=(_PERIOD,)),
    FunctionSpec("wma", "wma", _one(ta.wma), params=(_PERIOD,)),
    FunctionSpec("rsi", "rsi", _one(ta.rsi), params=(Param("period", 14, minimum=2),)),
    FunctionSpec("macd", "macd", ta.macd, 0, params=_MACD),
    FunctionSpec("macd_signal", "macd", ta.macd, 1, params=_MACD),
    FunctionSpec("macd_hist", "macd", ta.macd, 2, params=_MACD),
    FunctionSpec("bbands_upper", "bbands", ta.bbands, 0, params=_BBANDS),
    FunctionSpec("bbands_middle", "bbands", ta.bbands, 1, params=_BBANDS),
    FunctionSpec("bbands_lower", "bbands", ta.bbands, 2, params=_BBANDS),
    FunctionSpec(
        "stddev",
        "stddev",
        _one(ta.stddev),
        params=(_PERIOD2, Param("nbdev", 1.0, integer=False, minimum=0.0)),
    ),
    _hlc("atr", ta.atr, Param("period", 14)),
    _hlc("adx", ta.adx, Param("period", 14, minimum=2)),
    _hlc("plus_di", ta.plus_di, Param("period", 14)),
    _hlc("minus_di", ta.minus_di, Param("period", 14)),
    FunctionSpec("stoch_k", "stoch", ta.stoch, 0, sources=0, columns=_HLC, params=_STOCH),
    FunctionSpec("stoch_d", "stoch", ta.stoch, 1, sources=0, columns=_HLC, params=_STOCH),
    FunctionSpec(
        "vwap",
        "vwap",
        _one(ta.vwap),
        sources=0,
        columns=(*_HLC, "volume", "timestamp"),
        params=(Param("period", 0, minimum=0),),
    ),
    FunctionSpec("highest", "highest", _one(ta.highest), params=(_PERIOD2,)),
    FunctionSpec("lowest", "lowest", _one(ta.lowest), params=(_PERIOD2,)),
    FunctionSpec("roc", "roc", _one(ta.roc), params=(Param("period", 10),)),
    FunctionSpec("shift", "shift", _one(ta.shift), params=(Param("bars", 1, minimum=0),)),
    FunctionSpec("abs", "abs", _one(ta.absolute), implicit_source=False),
    FunctionSpec("min", "min", _minmax(ta.minimum), sources=2),
    FunctionSpec("max", "max", _minmax(ta.maximum), sources=2),
    FunctionSpec("crosses_above", "crosses_above", _crosses, sources=2, boolean=True),
    FunctionSpec("crosses_below", "crosses_below", _crosses_below, sources=2, boolean=True),
)

FUNCTIONS: Mapping[str, FunctionSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})


def describe_all() -> str:
    """One line per function, for error messages and docs."""
    return "; ".join(spec.signature for spec in _SPECS)
