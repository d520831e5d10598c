"""Batch scans under the spawner: the batch worker, its shards and its results.

A batch (symbols or a universe file, a timeframe, a date range, a formula
and its parameters) is a job on the ``batch_jobs`` queue, or several: a
large batch is split into shards that several batch workers, on one host or
many, take from the same queue. Redis carries everything between them: the
shards (stream entries), the progress and each shard's results (the hash
``orch:batch:<id>``, see ``ledger``), and the decision of which shard
merges (a Lua script). Modules:

* ``settings``: the ``batch`` config section (imports nothing heavy);
* ``request``: a job's payload, read and checked, split into shards;
* ``ledger``: the batch hash and its Lua scripts;
* ``progress``: counting a shard's results, pacing updates, the rate;
* ``stopping``: SIGTERM and the deadline cut a shard short;
* ``results``: the results files, and the parts merged into them;
* ``runner``: the worker's handler; ``worker``: the worker program;
* ``submit`` and ``status``: what ``orchestrator batch`` runs.

This module imports nothing, so the config parser can import ``settings``
without the engine.
"""
