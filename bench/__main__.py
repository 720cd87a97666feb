"""Run the benchmarks: `python -m bench [realtime|messaging|search|compare|soak ...] [-- options]`.

With no name, runs realtime, messaging and search one after another; each prints its own
table. `compare` (this server beside bare Tornado and python-socketio, about 10 minutes) and
`soak` (5 minutes of chaos, then the delivery checks) run only when named. Options after
`--` go to every benchmark named (see `python -m bench.<name> --help`).
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("realtime", "messaging", "search", "compare", "soak", "uploads", "metrics")
DEFAULT = ("realtime", "messaging", "search")


def main(argv: list[str]) -> int:
    names, options = argv, []
    if "--" in argv:
        split = argv.index("--")
        names, options = argv[:split], argv[split + 1 :]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        return 2
    for name in names or DEFAULT:
        print(f"\n=== bench.{name} ===", flush=True)
        module = importlib.import_module(f"bench.{name}")
        status = module.main(options)
        if status:
            return int(status)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
