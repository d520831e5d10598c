"""The market scanner's engine room: a tick stream into alerts.

Modules, one concept each:

- ``scanner_settings``: the top-level ``scanner`` config section (light;
  imports nothing heavy, so ``orchestrator check`` can validate it).
- ``rolling``: per-symbol rolling state updated tick by tick.
- ``patterns``: the detectors (BREAKOUT, MOMENTUM, VOLUME_SPIKE) and the
  per-(symbol, pattern) cool-off.
- ``detection``: a batch of ticks through indicators and detectors; checkpoints.
- ``frames``: the wire format between the pool and its processes.
- ``poolproc``: the program each pool process runs.
- ``poolpipes``: the parent's end of one pool process (``PoolPipe``).
- ``partitions``: per-partition bookkeeping (waiting, in flight, replay tail).
- ``scanner_metrics``: the pool's counters (``submitted``, ``completed``, ...).
- ``scanner_pool``: ``ScannerPool``, what the scanner worker submits batches to.
- ``consumer``, ``reader``, ``outbox``, ``warmup``: the scanner worker, its
  reads, its writes, its start.
- ``metrics_report``: the figures published for ``orchestrator status``.
- ``batching``: the adaptive read size.
- ``discovery``: slow, I/O-bound discovery scanners on a thread pool.
- ``scanner_app``, ``scanner_cli``: the app's seam and its command.

This package imports nothing on its own: ``import orchestrator.apps.scanner.scanner_settings``
stays cheap.
"""
