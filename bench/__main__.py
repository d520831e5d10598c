"""Run every benchmark module, or those named on the command line; options
after one name go to it (``python -m bench soak --jobs 100000``)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import bench


def discover() -> list[str]:
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules(bench.__path__)
        if m.name.startswith("bench_")
    )


def main(argv: list[str]) -> int:
    split = next((i for i, arg in enumerate(argv) if arg.startswith("-")), len(argv))
    names, options = argv[:split] or discover(), argv[split:]
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(discover())}")
        return 2
    if options and len(names) != 1:
        print("options go to one benchmark: python -m bench NAME --option ...")
        return 2
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        if options:
            module.main(options)
        else:
            module.main()
        print(f"--- {name}: {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
