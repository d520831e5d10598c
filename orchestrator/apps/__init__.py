"""The programs the project ships on top of the orchestrator core.

Each folder is one app: ``announcements`` (the AI, upload and investor
workers of the announcement pipeline, and the demo), ``scanner`` (the
market scanner) and ``batch`` (the batch engine and its worker). An app
imports the core, never the reverse (``make lint`` checks it), and plugs in
through one seam: ``orchestrator.plugins.App``, named under the entry point
group ``orchestrator.apps`` in ``pyproject.toml``.
"""
