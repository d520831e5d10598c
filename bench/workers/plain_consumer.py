"""Throughput bench, the practical limit: a long-lived plain consumer loop.

Reads the group 100 entries at a time, runs the tiny job on each, and
acknowledges the batch; once it has had work, exits when the stream has
been empty for 0.5 s.
"""

import json
import sys
from typing import Any

import redis

from bench.workers.tiny import handle

url, stream, consumer = sys.argv[1], sys.argv[2], sys.argv[3]
r = redis.Redis.from_url(url)
seen = False
while True:
    block = 500 if seen else 60_000
    reply: Any = r.xreadgroup("workers", consumer, {stream: ">"}, count=100, block=block)
    if not reply:
        break
    seen = True
    ids = []
    for entry_id, fields in reply[0][1]:
        handle(json.loads(fields[b"payload"]))
        ids.append(entry_id)
    r.xack(stream, "workers", *ids)
