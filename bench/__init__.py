"""Benchmarks: ``make bench`` or ``python -m bench [NAME ...]``.

Each ``bench/bench_<name>.py`` has a ``main() -> None`` that runs its
baseline and its subject in the same process or run and prints ratios.
Absolute times on shared machines are noise; ratios are the result.
"""
