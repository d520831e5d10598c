"""Test worker: records its pid and environment, then sleeps (SLEEP_S)."""

import json
import os
import sys
import time
from pathlib import Path

out = Path(os.environ["TEST_OUT"])
out.mkdir(parents=True, exist_ok=True)
env = {k: v for k, v in os.environ.items() if k.startswith("ORCH_")}
(out / f"{os.getpid()}.json").write_text(json.dumps(env))
time.sleep(float(os.environ.get("SLEEP_S", "60")))
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
