"""Market scanner (queue ``scanner``): ticks in, alerts out, a process pool inside.

Reads the queue's stream (seed: ``ticks:intraday:processed``, group
``scanner_group``) in adaptive batches, its own pending entries first;
detects BREAKOUT, MOMENTUM and VOLUME_SPIKE per symbol in pool processes
(partitioned by symbol); writes alerts to ``scanner.alert_stream`` and
acknowledges their ticks in one MULTI/EXEC. See
``orchestrator/apps/scanner/consumer.py`` and the README's "Market scanner".
"""

from __future__ import annotations

from orchestrator.apps.scanner.consumer import run_scanner

if __name__ == "__main__":
    run_scanner()
