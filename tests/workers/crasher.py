"""Test worker: exits at once with EXIT_CODE (default 1), recording the time."""

import os
import sys
import time
from pathlib import Path

out = Path(os.environ["TEST_OUT"])
out.mkdir(parents=True, exist_ok=True)
(out / f"{os.getpid()}.start").write_text(f"{time.time():.6f}")
sys.exit(int(os.environ.get("EXIT_CODE", "1")))
