"""The market scanner's engine room: a tick stream into alerts.

Modules, one concept each:

- ``settings``: the top-level ``scanner`` config section (light; imports
  nothing heavy, so ``orchestrator check`` can validate it).
- ``indicators``: per-symbol rolling state updated tick by tick.
- ``patterns``: the detectors (BREAKOUT, MOMENTUM, VOLUME_SPIKE) and the
  per-(symbol, pattern) cool-off.
- ``engine``: a batch of ticks through indicators and detectors; checkpoints.
- ``frames``: the wire format between the pool and its processes.
- ``poolproc``: the program each pool process runs.
- ``channel``: the parent's end of one pool process.
- ``ledger``: per-partition bookkeeping (waiting, in flight, replay tail).
- ``metrics``: the pool's counters (``submitted``, ``completed``, ...).
- ``pool``: ``ScannerPool``, what the scanner worker submits batches to.
- ``batching``: the adaptive read size.
- ``discovery``: slow, I/O-bound discovery scanners on a thread pool.

This package imports nothing on its own: ``import orchestrator.apps.scanner.scanner_settings``
stays cheap.
"""
