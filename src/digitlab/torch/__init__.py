"""The PyTorch twin (optional: ``pip install digitlab[torch]``): one architecture spec builds the NumPy
model and the same `torch.nn.Sequential`, and weights move between them exactly.

Parameter names follow ``torch.nn.Sequential`` (``"1.weight"``); a NumPy `Dense.W` of shape
``(in, out)`` is PyTorch's ``weight.T``.

Importing this package does not import PyTorch: the names below load `digitlab.torch.twin` (and with
it PyTorch) on first use. That keeps ``digitlab train`` with the NumPy backend, the CLI's start-up and
``digitlab.torch.onnx_model`` (onnxruntime only) free of PyTorch and of its thread pools, which fight
NumPy's (see `digitlab.bench.harness`).

- `twin`: `build_module`, `numpy_to_torch`, `torch_to_numpy`, `to_module`.
- `checkpoint`: safetensors / ``.npz`` checkpoints; ``.pt`` only through ``torch.load(weights_only=True)``.
- `train`: the PyTorch training loop (devices, AMP, ``torch.compile``, DDP); `augment`: augmentation on the device.
- `export`: ONNX export of any digitlab model; `onnx_model`: run an ``.onnx`` model with onnxruntime.
"""

from __future__ import annotations

from typing import Any

_TWIN = ("build_module", "numpy_to_torch", "torch_to_numpy", "to_module")
__all__ = list(_TWIN)


def __getattr__(name: str) -> Any:
    if name in _TWIN:
        from digitlab.torch import twin

        return getattr(twin, name)
    raise AttributeError(f"module 'digitlab.torch' has no attribute {name!r}")
