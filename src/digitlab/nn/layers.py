"""Layers with hand-written forward and backward passes.

Every layer follows one small protocol:

- ``forward(x, training)`` returns the output and caches what backward needs;
- ``backward(dout)`` takes dL/d(output) and returns dL/d(input), writing dL/d(param) into
  ``self.grads`` (overwritten, not accumulated: one backward per forward);
- ``params`` / ``grads`` map short names (``"W"``, ``"b"``) to arrays; ``buffers`` hold non-trained
  state (running statistics);
- ``spec()`` returns the constructor arguments as plain JSON, so a saved model can be rebuilt.

Shapes follow the convention ``x: (N, features)`` for dense layers; ``Dense.W`` is ``(in, out)`` so
that ``z = x @ W + b`` reads as in the textbooks (PyTorch stores the transpose).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digitlab.nn.init import init_weight

LAYERS: dict[str, type[Layer]] = {}


def register(cls: type[Layer]) -> type[Layer]:
    """Make a layer class buildable from its spec (``{"type": cls.__name__, ...}``)."""
    LAYERS[cls.__name__] = cls
    return cls


class Layer:
    """Base class: no parameters, identity spec."""

    need_input_grad = True  # False: backward may skip dL/dx and return None (first layer of a net)
    # True: forward's output and backward's dL/dx may live in buffers that the layer's next call of the
    # same kind overwrites. `Sequential` sets it while training, for the results it does not hand out
    # (each is read by the next layer before that next call); fresh arrays spare the page faults of
    # tens of MB a batch. Off by default: a caller may keep what a layer returned.
    reuse_outputs = False

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        return {"type": type(self).__name__}

    def astype(self, dtype) -> Layer:
        """Cast parameters, gradients and buffers in place (float64 for gradient checks)."""
        for store in (self.params, self.grads, self.buffers):
            for k, v in store.items():
                store[k] = v.astype(dtype)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.spec().items() if k != "type")
        return f"{type(self).__name__}({args})"


@register
class Dense(Layer):
    """Fully connected layer ``z = x @ W + b`` with ``W: (in, out)``, ``b: (out,)``.

    Backward, with ``G = dL/dz`` of shape ``(N, out)``:
    ``dL/dW = x.T @ G`` (each weight w_ij touches z_nj through x_ni), ``dL/db = sum_n G``,
    ``dL/dx = G @ W.T``.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, init: str = "he",
        seed: int | None = 0, dtype=np.float32,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.bias, self.init = in_features, out_features, bias, init
        rng = np.random.default_rng(seed)
        self.params["W"] = init_weight(init, (in_features, out_features), in_features, out_features, rng, dtype)
        self.grads["W"] = np.zeros_like(self.params["W"])
        if bias:
            self.params["b"] = np.zeros(out_features, dtype)
            self.grads["b"] = np.zeros_like(self.params["b"])

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"Dense({self.in_features}, {self.out_features}) expects input (N, {self.in_features}), "
                f"got {x.shape}; add a Flatten layer or fix in_features"
            )
        self.x = x
        z = x @ self.params["W"]
        if self.bias:
            z += self.params["b"]
        return z

    def backward(self, dout: np.ndarray) -> np.ndarray:
        np.matmul(self.x.T, dout, out=self.grads["W"])
        if self.bias:
            np.sum(dout, axis=0, out=self.grads["b"])
        return dout @ self.params["W"].T if self.need_input_grad else None

    def spec(self) -> dict[str, Any]:
        return {"type": "Dense", "in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias, "init": self.init}


@register
class ReLU(Layer):
    """``y = max(x, 0)``; ``dL/dx = dL/dy * [x > 0]`` (the sub-gradient 0 is taken at x = 0, as PyTorch)."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        # against an array of zeros, not the scalar 0: NumPy's SIMD loop wants two arrays (7x faster)
        zeros = getattr(self, "_zeros", None)
        if zeros is None or zeros.shape != x.shape or zeros.dtype != x.dtype or zeros.strides != x.strides:
            zeros = self._zeros = np.zeros_like(x)
        out = np.maximum(x, zeros)
        self.mask = out > 0
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self.mask


@register
class LeakyReLU(Layer):
    """``y = x`` for x > 0 else ``alpha * x``; ``dL/dx = dL/dy * (1 or alpha)``."""

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.mask = x > 0
        return np.where(self.mask, x, x * x.dtype.type(self.alpha))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return np.where(self.mask, dout, dout * dout.dtype.type(self.alpha))

    def spec(self) -> dict[str, Any]:
        return {"type": "LeakyReLU", "alpha": self.alpha}


@register
class Sigmoid(Layer):
    """``y = 1 / (1 + e^-x)``; ``dy/dx = y (1 - y)``. Computed without overflow for large |x|."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
        self.out = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return self.out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self.out * (1 - self.out)


@register
class Tanh(Layer):
    """``y = tanh(x)``; ``dy/dx = 1 - y^2``."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.out = np.tanh(x)
        return self.out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * (1 - self.out * self.out)


@register
class Dropout(Layer):
    """Inverted dropout: in training, keep each unit with probability ``1 - p`` and scale by ``1/(1-p)``
    so that the expected activation is unchanged and evaluation needs no rescaling.

    ``y = x * m / (1 - p)`` with a fixed mask m, so ``dL/dx = dL/dy * m / (1 - p)``.
    """

    def __init__(self, p: float = 0.5, seed: int | None = 0) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: Any) -> None:
        """Restart the mask stream (the training loop does this each epoch, so a resumed run is exact)."""
        self.rng = np.random.default_rng(seed)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if not training or self.p == 0:
            self.scale = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        self.scale = keep.astype(x.dtype) * x.dtype.type(1 / (1 - self.p))
        return x * self.scale

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout if self.scale is None else dout * self.scale

    def spec(self) -> dict[str, Any]:
        return {"type": "Dropout", "p": self.p}


@register
class Flatten(Layer):
    """``(N, d1, d2, ...) -> (N, d1*d2*...)``; backward restores the shape (a reshape has Jacobian I)."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout.reshape(self.shape)


def build_layer(spec: dict[str, Any], seed: int | None = 0, dtype=np.float32) -> Layer:
    """Instantiate a layer from its spec (as written by ``Layer.spec``)."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in LAYERS:
        raise ValueError(f"unknown layer type {kind!r}; known: {', '.join(sorted(LAYERS))}")
    cls = LAYERS[kind]
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    if "seed" in accepted:
        spec["seed"] = seed
    if "dtype" in accepted:
        spec["dtype"] = dtype
    return cls(**spec)
