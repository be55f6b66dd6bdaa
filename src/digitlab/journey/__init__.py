"""The learning path, one module per phase: each ``phaseN.run(out_dir, quick, seed)`` runs its
experiments, writes its figures and a JSON of the numbers into ``out_dir`` and returns the same dict,
so that the tests can check the science (not only that files exist) and the docs can quote numbers.

- `phase1`: one neuron and one dense layer, as Python loops and as NumPy — same numbers, very
  different speed — and the shapes of ``Z = X W + b``.
- `phase2`: backprop — a loss surface and gradient descent on it, XOR learned by a 2-2-1 network with
  hand-derived gradients, and every layer's backward checked against finite differences.
"""

from digitlab.journey import phase1, phase2

__all__ = ["phase1", "phase2"]
