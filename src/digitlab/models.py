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
    return _spec("mlp", layers, input_shape, num_classes)


def _spec(arch: str, layers: list[dict[str, Any]], input_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    """The model-file spec around a list of layer specs."""
    return {"format": FORMAT, "version": FORMAT_VERSION, "layers": layers, "input_shape": list(input_shape),
            "classes": [str(i) for i in range(num_classes)], "meta": {"arch": arch}}


def _dense_head(features: int, hidden: int, dropout: float, num_classes: int) -> list[dict[str, Any]]:
    """Flatten -> Dense(hidden, no bias) -> BatchNorm -> ReLU -> [Dropout] -> Dense(num_classes): the
    classifier on top of both CNNs."""
    head: list[dict[str, Any]] = [
        {"type": "Flatten"},
        {"type": "Dense", "in_features": features, "out_features": hidden, "bias": False, "init": "he"},
        {"type": "BatchNorm", "num_features": hidden, "momentum": 0.1, "eps": 1e-5}, {"type": "ReLU"}]
    if dropout:
        head.append({"type": "Dropout", "p": dropout})
    head.append({"type": "Dense", "in_features": hidden, "out_features": num_classes, "bias": True, "init": "he"})
    return head


def cnn_spec(channels: tuple[int, int] = (32, 64), hidden: int = 128, dropout: float = 0.3,
             input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> dict[str, Any]:
    """Two blocks of two 3x3 convolutions (no padding), each block ending in 2x2 max-pooling, then a
    dense layer: ``28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4``, so the head sees 4x4xC2 features.

    Every convolution is followed by BatchNorm (so the bias is redundant and off) and ReLU. In the
    second convolution of each block the pooling comes *before* the ReLU: max and ReLU commute
    (both are monotone), so the result is identical while ReLU runs on a quarter of the values.
    """
    c1, c2 = channels
    c, h, w = input_shape

    def conv(cin: int, cout: int) -> list[dict[str, Any]]:
        return [{"type": "Conv2D", "in_channels": cin, "out_channels": cout, "kernel_size": [3, 3],
                 "stride": [1, 1], "padding": [0, 0], "bias": False, "init": "he"},
                {"type": "BatchNorm", "num_features": cout, "momentum": 0.1, "eps": 1e-5}]

    pool = {"type": "MaxPool2D", "kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0]}
    relu = {"type": "ReLU"}
    layers = [*conv(c, c1), relu, *conv(c1, c1), pool, relu, *conv(c1, c2), relu, *conv(c2, c2), pool, relu]
    side_h, side_w = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
    layers += _dense_head(c2 * side_h * side_w, hidden, dropout, num_classes)
    return _spec("cnn", layers, input_shape, num_classes)


def cnn5_spec(channels: tuple[int, int] = (32, 64), hidden: int = 128, dropout: float = 0.3,
              input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> dict[str, Any]:
    """The classic alternative: conv5x5(32, pad 2)-pool-conv5x5(64, pad 2)-pool-dense, with BatchNorm;
    ``28 -> 14 -> 7``. Kept for the architecture study that chose `cnn_spec` as the default."""
    c1, c2 = channels
    c, h, w = input_shape
    layers: list[dict[str, Any]] = []
    for cin, cout in ((c, c1), (c1, c2)):
        layers += [{"type": "Conv2D", "in_channels": cin, "out_channels": cout, "kernel_size": [5, 5],
                    "stride": [1, 1], "padding": [2, 2], "bias": False, "init": "he"},
                   {"type": "BatchNorm", "num_features": cout, "momentum": 0.1, "eps": 1e-5},
                   {"type": "MaxPool2D", "kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0]},
                   {"type": "ReLU"}]
    layers += _dense_head(c2 * (h // 4) * (w // 4), hidden, dropout, num_classes)
    return _spec("cnn5", layers, input_shape, num_classes)


ARCHITECTURES = {"mlp": mlp_spec, "cnn": cnn_spec, "cnn5": cnn5_spec}


def build(spec: dict[str, Any], seed: int = 0, dtype=np.float32) -> Sequential:
    """A freshly initialised NumPy model for ``spec``."""
    return Sequential.from_spec(spec, seed=seed, dtype=dtype)
