"""`Sequential`: a stack of layers, its parameters by name, and its `.npz` file format.

File format (``format = "digitlab-model"``, ``version = 1``): one ``.npz`` written with NumPy only and
read with ``allow_pickle=False``. It holds ``__spec__``, a JSON string with the layer specs, the input
shape, the class names and free-form metadata (the model card), and one array per parameter or buffer
under ``"<layer index>.<name>"`` (``"0.W"`` is the weight of layer 0, as in ``torch.nn.Sequential``).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.errors import ModelFileError
from digitlab.nn import parallel
from digitlab.nn.layers import Flatten, Layer, ReLU, build_layer

FORMAT = "digitlab-model"
FORMAT_VERSION = 1


class Sequential:
    """Layers applied in order; backward runs them in reverse."""

    def __init__(self, layers: list[Layer], input_shape: tuple[int, ...] = (1, 28, 28),
                 classes: list[str] | None = None, meta: dict[str, Any] | None = None) -> None:
        self.layers = list(layers)
        self.input_shape = tuple(input_shape)
        self.classes = classes if classes is not None else [str(i) for i in range(10)]
        self.meta = dict(meta or {})

    # -- computation -----------------------------------------------------------------------------
    def _fused(self) -> set[int]:
        """Indices of the ReLU layers that the layer before computes in its own pass: a layer marked
        ``fuses_relu`` (`BatchNorm`, `MaxPool2D`) directly followed by a plain `ReLU`; ``forward`` sets that layer's
        ``relu`` flag for the call. The function is the same; the activations are traversed twice less
        in each direction."""
        return {i + 1 for i in range(len(self.layers) - 1)
                if getattr(self.layers[i], "fuses_relu", False) and type(self.layers[i + 1]) is ReLU}

    def _handed_out(self, order, fused: set[int]) -> set[int]:
        """The layers whose result may reach the caller: the last one to run in ``order`` and, while
        that passes on a view of its input (`Flatten`), the one before it."""
        out: set[int] = set()
        for i in order:
            if i in fused:
                continue
            out.add(i)
            if type(self.layers[i]) is not Flatten:
                break
        return out

    def _section(self) -> AbstractContextManager:
        """For a net with batch-parallel layers (convolution, pooling) the whole pass runs with BLAS
        single-threaded (`digitlab.nn.parallel.section`): those layers bring their own worker threads,
        and a multi-threaded BLAS call in between (the dense head) would leave a BLAS thread spinning,
        competing with the workers for the cores. Other nets keep BLAS threading as it is."""
        if any(getattr(layer, "batch_parallel", False) for layer in self.layers):
            return parallel.section()
        return nullcontext()

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        with self._section():
            return self._forward(x, training)

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        fused = self._fused()
        handed_out = self._handed_out(reversed(range(len(self.layers))), fused)
        for i, layer in enumerate(self.layers):
            if i in fused:
                continue
            # in training, every result but the net's output is read by the next layer only, before
            # this layer runs again: it may live in a reused buffer (`Layer.reuse_outputs`)
            layer.reuse_outputs = training and i not in handed_out
            if i + 1 in fused:
                layer.relu = True
            try:
                x = layer.forward(x, training)
            finally:
                if i + 1 in fused:
                    layer.relu = False
                layer.reuse_outputs = False
        return x

    __call__ = forward

    def backward(self, dout: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate dL/d(output). With ``input_grad=False`` (training on data) it stops after the
        first layer with parameters and skips that layer's input gradient, which nobody needs: for the
        default MLP that is a quarter of the backward FLOPs."""
        with self._section():
            return self._backward(dout, input_grad)

    def _backward(self, dout: np.ndarray, input_grad: bool) -> np.ndarray | None:
        stop = 0
        if not input_grad:
            stop = next((i for i, layer in enumerate(self.layers) if layer.params), None)
            if stop is None:
                return None
        fused = self._fused()
        handed_out = self._handed_out(range(stop, len(self.layers)), fused)
        for i in range(len(self.layers) - 1, stop - 1, -1):
            if i in fused:
                continue  # its backward ran inside the layer before (see `_fused`)
            layer = self.layers[i]
            if i == stop and not input_grad:
                layer.need_input_grad = False
                try:
                    layer.backward(dout)
                finally:
                    layer.need_input_grad = True
                return None
            layer.reuse_outputs = i not in handed_out  # the first layer's dL/dx goes to the caller
            try:
                dout = layer.backward(dout)
            finally:
                layer.reuse_outputs = False
        return dout

    def predict_logits(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Logits for float inputs ``(N, *input_shape)``, in eval mode, batch by batch."""
        x = self._check_input(x)
        return np.concatenate([self.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]) \
            if len(x) else np.zeros((0, len(self.classes)), self.dtype)

    def predict(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        return self.predict_logits(x, batch_size).argmax(axis=1)

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == len(self.input_shape) and x.shape == self.input_shape:
            x = x[None]
        if x.shape[1:] != self.input_shape and x.reshape(len(x), -1).shape[1] != int(np.prod(self.input_shape)):
            raise ValueError(f"model expects inputs of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {x.shape}")
        x = x.reshape((len(x), *self.input_shape))
        if x.dtype == np.uint8:
            raise ValueError("model inputs are floats in [0, 1]; convert uint8 images with digitlab.data.to_float")
        return x.astype(self.dtype, copy=False)

    # -- parameters ------------------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        for layer in self.layers:
            for p in layer.params.values():
                return p.dtype
        return np.dtype(np.float32)

    def parameters_and_grads(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for i, layer in enumerate(self.layers):
            for name, p in layer.params.items():
                yield f"{i}.{name}", p, layer.grads[name]

    def named_parameters(self) -> dict[str, np.ndarray]:
        return {name: p for name, p, _ in self.parameters_and_grads()}

    def named_grads(self) -> dict[str, np.ndarray]:
        return {name: g for name, _, g in self.parameters_and_grads()}

    def num_params(self) -> int:
        return sum(p.size for p in self.named_parameters().values())

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers by name (copies)."""
        out = {}
        for i, layer in enumerate(self.layers):
            for store in (layer.params, layer.buffers):
                out.update({f"{i}.{k}": v.copy() for k, v in store.items()})
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy values into the existing arrays; every key must match in name and shape."""
        expected = {}
        for i, layer in enumerate(self.layers):
            for store in (layer.params, layer.buffers):
                expected.update({f"{i}.{k}": (store, k) for k in store})
        missing, unexpected = set(expected) - set(state), set(state) - set(expected)
        if missing or unexpected:
            raise ModelFileError(f"state does not fit this model: missing {sorted(missing)}, "
                                 f"unexpected {sorted(unexpected)}")
        for key, (store, k) in expected.items():
            value = np.asarray(state[key])
            if value.shape != store[k].shape:
                raise ModelFileError(f"state entry {key} has shape {value.shape}, the model wants {store[k].shape}")
            store[k][...] = value

    def astype(self, dtype) -> Sequential:
        for layer in self.layers:
            layer.astype(dtype)
        return self

    # -- spec and files --------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "layers": [layer.spec() for layer in self.layers],
                "input_shape": list(self.input_shape), "classes": self.classes, "meta": self.meta}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], seed: int = 0, dtype=np.float32) -> Sequential:
        """Build (freshly initialised) layers from a spec; layer i is seeded with ``seed + i``."""
        layers = [build_layer(s, seed=seed + i, dtype=dtype) for i, s in enumerate(spec["layers"])]
        return cls(layers, tuple(spec.get("input_shape", (1, 28, 28))), spec.get("classes"), spec.get("meta"))

    def save(self, path: str | os.PathLike, **extra: np.ndarray) -> Path:
        """Write the model atomically (temp file in the same folder, then rename)."""
        arrays = dict(self.state_dict())
        arrays["__spec__"] = np.array(json.dumps(self.spec()))
        arrays.update(extra)
        return save_npz_atomic(path, arrays)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential(\n  {inner}\n)  # {self.num_params():,} parameters"


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path``, fsync it, then ``os.replace``: a crash never
    leaves half a file, and a reader sees the old file or the new one. Model files, resume files and
    the PyTorch backend's safetensors all go through here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a model file is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """``np.savez`` through `atomic_write`."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (no pickles); a clear error for a missing or non-npz file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a readable .npz file (no zip archive inside); is this a digitlab model?")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelFileError(f"{path}: not a readable .npz file ({exc}); is this a digitlab model?") from None
    except ValueError as exc:  # object arrays need pickle: we never load them
        if "pickle" in str(exc):
            raise ModelFileError(f"{path}: refused: the file contains pickled objects, which digitlab never "
                                 f"loads (weights are plain arrays)") from None
        raise ModelFileError(f"{path}: not a readable .npz file ({exc})") from None


def parse_spec(arrays: dict[str, np.ndarray], name: str) -> dict[str, Any]:
    if "__spec__" not in arrays:
        raise ModelFileError(f"{name}: not a digitlab model (no __spec__ entry); train one with `digitlab train`")
    try:
        spec = json.loads(str(arrays["__spec__"]))
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{name}: the model spec is not valid JSON ({exc})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        found = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
        raise ModelFileError(f"{name}: not a digitlab model file (format {found!r}, expected {FORMAT!r})")
    if spec.get("version") != FORMAT_VERSION:
        raise ModelFileError(f"{name}: model format version {spec.get('version')} is not supported by this digitlab "
                             f"(it reads version {FORMAT_VERSION}); upgrade digitlab or re-export the model")
    return spec


def load(path: str | os.PathLike) -> Sequential:
    """Rebuild a model saved by `Sequential.save`, with no code from the user."""
    arrays = read_npz(path)
    spec = parse_spec(arrays, str(path))
    try:
        model = Sequential.from_spec(spec)
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path}: the model spec cannot be built ({exc})") from None
    state = {k: v for k, v in arrays.items() if not k.startswith("__")}
    dtype = next(iter(state.values())).dtype if state else np.float32
    model.astype(dtype)
    model.load_state_dict(state)
    return model
