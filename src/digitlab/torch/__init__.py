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
        else:
            raise ValueError(f"layer type {kind!r} has no PyTorch twin yet")
    return nn.Sequential(*mods)


def numpy_to_torch(model, module: nn.Sequential) -> nn.Sequential:
    """Copy the NumPy model's parameters into ``module`` (built from the same spec)."""
    with torch.no_grad():
        for layer, mod in zip(model.layers, module, strict=True):
            if type(layer).__name__ == "Dense":
                mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(layer.params["W"].T)))
                if layer.bias:
                    mod.bias.copy_(torch.from_numpy(layer.params["b"]))
    return module


def torch_to_numpy(module: nn.Sequential, model):
    """Copy ``module``'s parameters into the NumPy model (built from the same spec)."""
    for layer, mod in zip(model.layers, module, strict=True):
        if type(layer).__name__ == "Dense":
            layer.params["W"][...] = mod.weight.detach().cpu().numpy().T
            if layer.bias:
                layer.params["b"][...] = mod.bias.detach().cpu().numpy()
    return model
