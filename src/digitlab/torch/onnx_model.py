"""`OnnxModel`: an ``.onnx`` file run by onnxruntime, with the interface of a NumPy `Sequential` that
``digitlab eval`` and the recogniser use (``forward``, ``predict_logits``, ``predict``, ``classes``,
``input_shape``, ``meta``). Needs only onnxruntime: importing this module does not import PyTorch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from digitlab.errors import ModelFileError

SPEC_KEY = "digitlab_spec"  # as in digitlab.torch.export


class OnnxModel:
    """An ONNX classifier of ``(N, *input_shape)`` float images. Files written by ``digitlab export``
    carry their spec (class names, input shape, card); for others these are read off the graph."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such model file")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"{self.path}: not a readable ONNX model ({first[:200]})") from None
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        props = self.session.get_modelmeta().custom_metadata_map
        spec: dict[str, Any] = json.loads(props[SPEC_KEY]) if SPEC_KEY in props else {}
        shape = spec.get("input_shape") or [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
        self.input_shape = tuple(int(d) for d in shape)
        n_out = out.shape[-1] if out.shape and isinstance(out.shape[-1], int) else 10
        self.classes: list[str] = list(spec.get("classes") or [str(i) for i in range(n_out)])
        self.meta: dict[str, Any] = dict(spec.get("meta") or {})
        self._spec = spec

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def spec(self) -> dict[str, Any]:
        return dict(self._spec)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Logits of one batch (inference only: ``training`` must be False)."""
        if training:
            raise ValueError("an ONNX model is for inference only")
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), *self.input_shape))
        return self.session.run([self.output_name], {self.input_name: x})[0]

    __call__ = forward

    def predict_logits(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype == np.uint8:
            raise ValueError("model inputs are floats in [0, 1]; convert uint8 images with digitlab.data.to_float")
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        return np.concatenate([self.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])

    def predict(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        return self.predict_logits(x, batch_size).argmax(axis=1)

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, input {self.input_shape}, {len(self.classes)} classes)"


def load_model(path: str | os.PathLike):
    """A model by file: ``.onnx`` through onnxruntime, anything else as a digitlab ``.npz``."""
    if Path(path).suffix == ".onnx":
        return OnnxModel(path)
    from digitlab.nn.model import load

    return load(path)
