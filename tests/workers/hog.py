"""Test worker: allocates HOG_MB of memory in a child process, then sleeps."""

import os
import subprocess
import sys
import time

mb = int(os.environ.get("HOG_MB", "200"))
child = subprocess.Popen(
    [
        sys.executable,
        "-c",
        f"b = bytearray({mb} * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1"
        "\nimport time; time.sleep(600)",
    ]
)
time.sleep(600)
