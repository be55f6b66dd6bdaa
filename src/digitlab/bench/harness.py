"""Benchmark harness: every measurement runs in a fresh process of its own.

NumPy's and PyTorch's thread pools fight when one process uses both (20-50x stalls were seen on a
2-core machine), so a benchmark here is a list of *sides*; each side is a worker
(``python -m digitlab.bench.worker BENCH SIDE``) that prints one JSON object. Sides are run in
alternating order, ``pairs`` times, and we report medians and the median of per-pair ratios, which
cancels slow drifts of a shared machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

THREADS = 2


def worker_env(native_blas: bool = False) -> dict[str, str]:
    """The environment of a worker: ``THREADS`` threads for every pool. ``native_blas`` drops the
    OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE overrides some machines set, so OpenBLAS picks its own kernel."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(THREADS)
    if native_blas:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    return env


def run_worker(bench: str, side: str, args: list[str] | None = None, native_blas: bool = False,
               timeout: float = 1800) -> dict:
    """Run one side in its own process and return the JSON it printed."""
    cmd = [sys.executable, "-m", "digitlab.bench.worker", bench, side, *(args or [])]
    proc = subprocess.run(cmd, env=worker_env(native_blas), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        raise RuntimeError(f"benchmark worker {bench}/{side} failed (exit {proc.returncode}): " + " | ".join(tail))
    return json.loads(proc.stdout.strip().splitlines()[-1])


@dataclass
class Side:
    """One contender: ``name`` in the report, ``worker`` the worker side, ``native_blas`` as above."""

    name: str
    worker: str
    native_blas: bool = False


def alternate(bench: str, sides: list[Side], pairs: int, args: list[str] | None = None,
              log: Callable[[str], None] = lambda s: None) -> dict[str, list[dict]]:
    """Run every side ``pairs`` times, rotating the order each round; results by side name."""
    results: dict[str, list[dict]] = {s.name: [] for s in sides}
    for r in range(pairs):
        order = sides[r % len(sides):] + sides[:r % len(sides)]
        for side in order:
            out = run_worker(bench, side.worker, args, side.native_blas)
            results[side.name].append(out)
            log(f"  [{bench} {r + 1}/{pairs}] {side.name}: " +
                ", ".join(f"{k}={v:.4g}" for k, v in out.items() if isinstance(v, float)))
    return results


def median_of(runs: list[dict], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def median_ratio(a: list[dict], b: list[dict], key: str) -> float:
    """Median over pairs of ``a[i][key] / b[i][key]``."""
    return float(statistics.median(x[key] / y[key] for x, y in zip(a, b, strict=True)))


def ratio_lines(result: dict) -> list[str]:
    """One report line per ``ratio_*`` key of a benchmark result."""
    return [f"  {key:45s} {value:.2f}x" for key, value in result.items() if key.startswith("ratio_")]


def blas_info() -> list[dict]:
    """The BLAS libraries loaded, with kernel and threads (threadpoolctl); NumPy's own first (OpenCV
    may bring a second OpenBLAS, which NumPy does not use)."""
    from threadpoolctl import threadpool_info

    libs = sorted(threadpool_info(), key=lambda i: "numpy" not in str(i.get("filepath", "")))
    return [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")} for i in libs]
