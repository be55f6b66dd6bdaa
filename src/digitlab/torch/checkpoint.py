"""Checkpoints of the PyTorch backend: safetensors or the digitlab ``.npz``, never a pickle.

A ``.pt`` file is a pickle, and unpickling runs whatever code the file names. digitlab reads one only
through ``torch.load(..., weights_only=True)``, which accepts tensors and plain containers and refuses
everything else; the refusal becomes a one-line `ModelFileError`. Files digitlab writes itself are
``.npz`` (models, readable by the NumPy engine alone) or ``.safetensors`` (resume state).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from digitlab.errors import DigitlabError, ModelFileError
from digitlab.nn.model import atomic_write
from digitlab.torch.twin import build_module, numpy_to_torch, torch_to_numpy

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError:
        raise DigitlabError("safetensors files need the safetensors package: pip install 'digitlab[torch]'") from None
    return st


def save_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                     metadata: dict[str, Any] | None = None) -> Path:
    """Write ``tensors`` atomically (temp file beside ``path``, then rename); ``metadata`` values are
    stored as JSON strings in the safetensors header."""
    st = _safetensors()
    plain = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    return atomic_write(path, lambda tmp: st.save_file(plain, tmp, metadata=header))


def load_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu"
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and (JSON-decoded) metadata of a safetensors file."""
    st = _safetensors()
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        return st.load_file(str(path), device=str(device)), meta
    except Exception as exc:  # OSError, JSON errors, and safetensors' own SafetensorError for a bad header
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from None


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A PyTorch state dict from ``.safetensors``, or from a ``.pt`` through ``weights_only=True``
    (anything but tensors and plain containers is refused, and no code in the file runs)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path)[0]
    if path.suffix not in PICKLE_SUFFIXES:
        raise ModelFileError(f"{path}: expected a .safetensors or .pt state dict")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refusals raise pickle's UnpicklingError; we import no pickle
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: refused: this .pt holds pickled objects other than tensors, and digitlab "
                             f"loads .pt files only with torch.load(weights_only=True) ({reason[:160]}); "
                             f"save a plain state dict, or better a .safetensors file") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: not a state dict (a mapping of names to tensors)")
    return state


def import_state_dict(model, state: dict[str, torch.Tensor], name: str = "state dict"):
    """Copy a PyTorch state dict of ``build_module(model.spec())`` into the NumPy ``model``."""
    module = build_module(model.spec())
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ModelFileError(f"{name} does not fit this architecture: {' '.join(first[:3])[:300]}") from None
    return torch_to_numpy(module, model)


def export_state_dict(model) -> dict[str, torch.Tensor]:
    """The NumPy model's weights as a state dict of its PyTorch twin (names like ``"1.weight"``)."""
    return numpy_to_torch(model, build_module(model.spec())).state_dict()
