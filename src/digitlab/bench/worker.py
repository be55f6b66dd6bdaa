"""Entry point of a benchmark process: ``python -m digitlab.bench.worker BENCH SIDE [ARGS]``.

Prints one JSON object on stdout. Imports only what its side needs, so a NumPy side never loads
PyTorch and the other way round.
"""

from __future__ import annotations

import json
import sys

from digitlab.bench import BENCHMARKS


def main(argv: list[str]) -> int:
    bench, side, *rest = argv
    result = BENCHMARKS[bench].worker(side, rest)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
