"""Architectures in one place: each is a plain spec (a dict of layer specs) that builds the NumPy
model here and, later, the same model in PyTorch.

A spec is exactly what `Sequential.spec()` writes into a model file, so a file, an architecture and
a freshly built model are the same thing seen three ways.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digitlab.nn.model import FORMAT, FORMAT_VERSION, Sequential

ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "leaky_relu": "LeakyReLU"}


def mlp_spec(hidden: tuple[int, ...] = (256, 128), dropout: float = 0.1, activation: str = "relu",
             input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> dict[str, Any]:
    """Flatten -> [Dense -> activation -> Dropout] x len(hidden) -> Dense(num_classes).

    The default 784-256-128-10 has 235,146 parameters; dropout 0.1 after each hidden layer.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    init = "he" if activation in ("relu", "leaky_relu") else "xavier"
    layers: list[dict[str, Any]] = [{"type": "Flatten"}]
    width = int(np.prod(input_shape))
    for h in hidden:
        layers.append({"type": "Dense", "in_features": width, "out_features": int(h), "bias": True, "init": init})
        layers.append({"type": ACTIVATIONS[activation]})
        if dropout:
            layers.append({"type": "Dropout", "p": dropout})
        width = int(h)
    layers.append({"type": "Dense", "in_features": width, "out_features": num_classes, "bias": True, "init": init})
    return {"format": FORMAT, "version": FORMAT_VERSION, "layers": layers, "input_shape": list(input_shape),
            "classes": [str(i) for i in range(num_classes)], "meta": {"arch": "mlp"}}


ARCHITECTURES = {"mlp": mlp_spec}


def build(spec: dict[str, Any], seed: int = 0, dtype=np.float32) -> Sequential:
    """A freshly initialised NumPy model for ``spec``."""
    return Sequential.from_spec(spec, seed=seed, dtype=dtype)
