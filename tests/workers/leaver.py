"""Test worker: starts a grandchild that outlives it, then exits 0."""

import os
import subprocess
import sys
from pathlib import Path

child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
)
out = Path(os.environ["TEST_OUT"])
out.mkdir(parents=True, exist_ok=True)
(out / f"{os.getpid()}.child").write_text(str(child.pid))
