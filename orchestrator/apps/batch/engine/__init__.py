"""The batch engine: scan thousands of symbols with a formula, on every core.

``ProcessingEngine`` runs a ``ProcessingJob`` (symbols, timeframe, date
range, formula) on a ``KillablePool``: each worker loads its own candles
from the repository, evaluates the parsed formula with vectorised
indicators, and sends back a small ``ProcessingResult``. A symbol that
hangs, crashes its worker or exceeds its memory cap gets an error; the
batch goes on.
"""

from orchestrator.apps.batch.engine.candles import (
    COLUMNS,
    CandleRepository,
    Candles,
    ParquetCandleRepository,
)
from orchestrator.apps.batch.engine.engine import ProcessingEngine
from orchestrator.apps.batch.engine.formula import Formula, parse_formula
from orchestrator.apps.batch.engine.lexer import FormulaError
from orchestrator.apps.batch.engine.processing import DateRange, ProcessingJob, ProcessingResult
from orchestrator.apps.batch.engine.scan import ScanSpec, scan_serially, scan_symbol

__all__ = [
    "COLUMNS",
    "CandleRepository",
    "Candles",
    "DateRange",
    "Formula",
    "FormulaError",
    "ParquetCandleRepository",
    "ProcessingEngine",
    "ProcessingJob",
    "ProcessingResult",
    "ScanSpec",
    "parse_formula",
    "scan_serially",
    "scan_symbol",
]
