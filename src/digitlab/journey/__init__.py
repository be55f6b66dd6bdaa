"""The learning path, one module per phase: each ``phaseN.run(out_dir, quick, seed)`` runs its
experiments, writes its figures and a JSON of the numbers into ``out_dir`` and returns the same dict,
so that the tests can check the science (not only that files exist), and ``phaseN.section(result)``
turns that JSON into the report's text (`report.write_report`).

- `phase1`: one neuron and one dense layer, as Python loops and as NumPy — same numbers, very
  different speed — and the shapes of ``Z = X W + b``.
- `phase2`: backprop — a loss surface and gradient descent on it, XOR learned by a 2-2-1 network with
  hand-derived gradients, and every layer's backward checked against finite differences.
- `phase3`: training dynamics — softmax + cross-entropy vs MSE, a learning-rate x momentum grid with
  its divergent corner detected, and momentum's effective step.
- `phase4`: the dense net is blind to space — a fixed pixel permutation (the dense net does not
  care, the CNN does), shifted test digits, parameter counts.
- `phase5`: inside the shipped CNN — filters, feature maps, confusion matrix, confident mistakes,
  NumPy vs PyTorch.

``digitlab journey [--phase N] [--quick] [--out DIR]`` runs them (`run`) and writes the report; the
notebooks in ``notebooks/`` call the same functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from digitlab.journey import phase1, phase2, phase3, phase4, phase5
from digitlab.journey.report import write_report

PHASES = {1: phase1, 2: phase2, 3: phase3, 4: phase4, 5: phase5}


def run(phases: Iterable[int] | None, out_dir: str | Path, quick: bool = False, seed: int = 0,
        command: str | None = None, log: Callable[[str], None] = lambda s: None) -> dict[int, dict[str, Any]]:
    """Run the given phases (all when None) into ``out_dir``, then rewrite ``report.md`` and
    ``report.html`` from every ``phaseN.json`` there (so a single phase rerun keeps the others)."""
    out_dir = Path(out_dir)
    results = {}
    for n in sorted(set(phases or PHASES)):
        if n not in PHASES:
            raise ValueError(f"no phase {n}; the phases are {', '.join(map(str, PHASES))}")
        t0 = time.perf_counter()
        log(f"phase {n}: running ({'quick' if quick else 'full'} mode, seed {seed}) ...")
        results[n] = PHASES[n].run(out_dir, quick=quick, seed=seed, command=command)
        log(f"phase {n}: done in {time.perf_counter() - t0:.1f} s, {', '.join(results[n]['figures'])}")
    md, page = write_report(out_dir)
    log(f"report: {md} and {page}")
    return results


__all__ = ["PHASES", "phase1", "phase2", "phase3", "phase4", "phase5", "run", "write_report"]
