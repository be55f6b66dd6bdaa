"""The PyTorch twin (optional: ``pip install digitlab[torch]``): one architecture spec builds the NumPy
model and the same `torch.nn.Sequential`, and weights move between them exactly.

Parameter names follow ``torch.nn.Sequential`` (``"1.weight"``); a NumPy `Dense.W` of shape
``(in, out)`` is PyTorch's ``weight.T``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("digitlab.torch needs PyTorch: pip install 'digitlab[torch]'") from exc


def build_module(spec: dict[str, Any]) -> nn.Sequential:
    """A `torch.nn.Sequential` with the same layers as the NumPy model of ``spec``."""
    mods: list[nn.Module] = []
    for s in spec["layers"]:
        kind = s["type"]
        if kind == "Dense":
            mods.append(nn.Linear(s["in_features"], s["out_features"], bias=s.get("bias", True)))
        elif kind == "Flatten":
            mods.append(nn.Flatten())
        elif kind == "ReLU":
            mods.append(nn.ReLU())
        elif kind == "LeakyReLU":
            mods.append(nn.LeakyReLU(s.get("alpha", 0.01)))
        elif kind == "Sigmoid":
            mods.append(nn.Sigmoid())
        elif kind == "Tanh":
            mods.append(nn.Tanh())
        elif kind == "Dropout":
            mods.append(nn.Dropout(s.get("p", 0.5)))
        elif kind == "Conv2D":
            mods.append(nn.Conv2d(s["in_channels"], s["out_channels"], tuple(s["kernel_size"]),
                                  stride=tuple(s["stride"]), padding=tuple(s["padding"]), bias=s.get("bias", True)))
        elif kind == "MaxPool2D":
            mods.append(nn.MaxPool2d(tuple(s["kernel_size"]), tuple(s["stride"]), tuple(s["padding"])))
        elif kind == "AvgPool2D":
            mods.append(nn.AvgPool2d(tuple(s["kernel_size"]), tuple(s["stride"]), tuple(s["padding"])))
        elif kind == "GlobalAvgPool":
            mods.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        elif kind == "BatchNorm":
            mods.append(_BatchNorm(s["num_features"], eps=s.get("eps", 1e-5), momentum=s.get("momentum", 0.1)))
        else:
            raise ValueError(f"layer type {kind!r} has no PyTorch twin yet")
    return nn.Sequential(*mods)


class _BatchNorm(nn.Module):
    """BatchNorm1d or 2d chosen by the input's rank, like the NumPy `BatchNorm`."""

    def __init__(self, num_features: int, eps: float, momentum: float) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, eps=eps, momentum=momentum)

    def forward(self, x):
        return F.batch_norm(x, self.bn.running_mean, self.bn.running_var, self.bn.weight, self.bn.bias,
                            self.training, self.bn.momentum, self.bn.eps)


# NumPy (layer type, name) -> (torch attribute path, transpose?)
_NAMES = {
    ("Dense", "W"): ("weight", True), ("Dense", "b"): ("bias", False),
    ("Conv2D", "W"): ("weight", False), ("Conv2D", "b"): ("bias", False),
    ("BatchNorm", "gamma"): ("bn.weight", False), ("BatchNorm", "beta"): ("bn.bias", False),
    ("BatchNorm", "running_mean"): ("bn.running_mean", False), ("BatchNorm", "running_var"): ("bn.running_var", False),
}


def _pairs(model, module):
    for layer, mod in zip(model.layers, module, strict=True):
        kind = type(layer).__name__
        for name, arr in {**layer.params, **layer.buffers}.items():
            path, transpose = _NAMES[(kind, name)]
            tensor = mod
            for part in path.split("."):
                tensor = getattr(tensor, part)
            yield arr, tensor, transpose


def numpy_to_torch(model, module: nn.Sequential) -> nn.Sequential:
    """Copy the NumPy model's parameters and buffers into ``module`` (built from the same spec)."""
    with torch.no_grad():
        for arr, tensor, transpose in _pairs(model, module):
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(arr.T if transpose else arr)))
    return module


def torch_to_numpy(module: nn.Sequential, model):
    """Copy ``module``'s parameters and buffers into the NumPy model (built from the same spec)."""
    for arr, tensor, transpose in _pairs(model, module):
        value = tensor.detach().cpu().numpy()
        arr[...] = value.T if transpose else value
    return model


def to_module(model) -> nn.Sequential:
    """The PyTorch twin of a NumPy model, with its weights (float32, on the CPU, in eval mode)."""
    return numpy_to_torch(model, build_module(model.spec())).eval()
