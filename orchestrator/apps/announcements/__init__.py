"""The announcement pipeline of issue 4: what the three worker programs call.

Light to import: nothing here pulls in pypdf, httpx or psycopg until the
module that needs it is imported.

- ``model``: the data types (``Category``, ``KeyFigure``, ``Announcement``,
  ``AnalysedAnnouncement``, ``Notification``).
- ``payloads``: untrusted dicts (jobs, analysed records, LLM replies) to types.
- ``errors``: the exception types, each with a one-line ``reason``.
- ``settings``: the ``database``, ``analysis`` and ``watchlists`` config sections.
- ``pdftext``: a job's text, from the job or from its PDF (pypdf).
- ``categories``, ``figures``, ``sentiment``, ``summary``: the offline rules.
- ``offline``, ``http_analyser``, ``analysers``: the two analysers and the factory.
- ``store``, ``sqlite_store``, ``postgres_store``: where analysed announcements go.
- ``watchlists``: matching analysed announcements against watchlists.
- ``pipeline``: one function per worker (analyse, upload, notify).
- ``report``: the demo's read-back of the store.
- ``handlers``: the three workers' handlers bound to their config (what
  ``workers/ephemeral_*.py`` serve on the worker runtime).
"""
