"""``orchestrator dashboard``: the live page of every host sharing the Redis.

``board`` reads what the spawners and the apps publish; ``server`` serves it
(Starlette on uvicorn, the ``[dashboard]`` extra) with the static page in
``static/`` (plain JavaScript and the vendored uPlot charts: nothing is
fetched from outside at run time).
"""
