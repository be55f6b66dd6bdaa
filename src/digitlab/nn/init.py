"""Weight initialisers. Each keeps the variance of activations roughly constant layer to layer.

- He (Kaiming) normal, ``std = sqrt(2 / fan_in)``: for ReLU, which zeroes half of its inputs.
- Xavier/Glorot uniform, ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``: for tanh/sigmoid,
  balancing forward and backward variance.
- LeCun normal, ``std = sqrt(1 / fan_in)``: for SELU/tanh-like units.
"""

from __future__ import annotations

import numpy as np

INITS = ("he", "xavier", "lecun")


def init_weight(
    kind: str, shape: tuple[int, ...], fan_in: int, fan_out: int, rng: np.random.Generator, dtype=np.float32
) -> np.ndarray:
    """A weight tensor of ``shape`` drawn by the named rule."""
    if kind == "he":
        w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
    elif kind == "xavier":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        w = rng.uniform(-limit, limit, size=shape)
    elif kind == "lecun":
        w = rng.normal(0.0, np.sqrt(1.0 / fan_in), size=shape)
    else:
        raise ValueError(f"unknown initialiser {kind!r}; choose one of {', '.join(INITS)}")
    return w.astype(dtype)
