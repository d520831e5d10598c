"""Test worker: ignores SIGTERM and starts a grandchild that ignores it too.

Writes "<worker pid> <grandchild pid>" to TEST_OUT/<pid>.tree, then sleeps.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(
    [
        sys.executable,
        "-c",
        "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
    ]
)
out = Path(os.environ["TEST_OUT"])
out.mkdir(parents=True, exist_ok=True)
tmp = out / f"{os.getpid()}.tmp"
tmp.write_text(f"{os.getpid()} {child.pid}")
tmp.rename(out / f"{os.getpid()}.tree")
while True:
    time.sleep(1)
