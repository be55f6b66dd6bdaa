"""A fast, forward-only twin of a trained `Sequential`, for the live camera loop.

Training needs every layer separate (each keeps what its backward pass needs); inference does not.
`InferenceModel` compiles a model once into a short list of steps that run in channels-last (NHWC)
memory from input to flatten, with three changes that do not alter the function computed (up to float32
rounding; the tests compare it with ``model.forward`` on the shipped models and random ones):

- **BatchNorm folded into the layer before it.** In evaluation BatchNorm is the affine map
  ``y = gamma * (z - mean) / sqrt(var + eps) + beta`` per channel. When ``z = conv(x, W) + b`` (or
  ``x @ W + b``), ``y = conv(x, W * s) + (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``:
  one scaled weight and one bias instead of a separate pass over the activations.
- **No layout round trips.** Each training layer takes and returns NCHW and transposes inside; here
  the activations stay NHWC, and the first Dense after Flatten has its rows permuted once from
  PyTorch's (C, H, W) flatten order to (H, W, C).
- **Dropout is the identity** (as in evaluation) and ReLU works in place.

Only the layer types of `digitlab.models` are supported; anything else raises `NotImplementedError`
and callers fall back to ``model.forward`` (the `Recognizer` does).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from digitlab.nn.conv import AvgPool2D, BatchNorm, Conv2D, GlobalAvgPool, MaxPool2D
from digitlab.nn.layers import Dense, Dropout, Flatten, LeakyReLU, ReLU

COLUMNS_BYTES = 1 << 20  # im2col chunk size: 1 MB (this machine's L2 is 1.25 MB per core)


def _bn_scale(bn: BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """``(s, t)`` with ``bn(z) = z * s + t`` in evaluation mode."""
    s = bn.params["gamma"].astype(np.float64) / np.sqrt(bn.buffers["running_var"].astype(np.float64) + bn.eps)
    t = bn.params["beta"].astype(np.float64) - bn.buffers["running_mean"].astype(np.float64) * s
    return s, t


class InferenceModel:
    """``InferenceModel(model)(x)`` equals ``model.forward(x)`` in evaluation mode, faster. ``x``: float
    ``(N, C, H, W)`` as the model takes it; returns ``(N, classes)`` float32 logits."""

    def __init__(self, model) -> None:
        self.model = model
        self.input_shape = tuple(model.input_shape)
        self.steps: list[tuple] = []
        layers = list(model.layers)
        shape = self.input_shape  # (C, H, W) while spatial, then (features,)
        i = 0
        while i < len(layers):
            layer = layers[i]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            fold = isinstance(nxt, BatchNorm)
            if isinstance(layer, Conv2D):
                w = layer.params["W"].astype(np.float64)  # (F, C, KH, KW)
                b = layer.params["b"].astype(np.float64) if "b" in layer.params else np.zeros(w.shape[0])
                if fold:
                    s, t = _bn_scale(nxt)
                    w, b = w * s[:, None, None, None], b * s + t
                    i += 1
                f, c, kh, kw = w.shape
                wm = np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(kh * kw * c, f), np.float32)
                self.steps.append(("conv", wm, b.astype(np.float32), layer.kernel_size, layer.stride, layer.padding))
                oh, ow = layer.output_size(shape[1], shape[2])
                shape = (f, oh, ow)
            elif isinstance(layer, BatchNorm):  # not after a conv/dense: a plain per-channel affine map
                s, t = _bn_scale(layer)
                self.steps.append(("affine", s.astype(np.float32), t.astype(np.float32)))
            elif isinstance(layer, ReLU):
                self.steps.append(("relu",))
            elif isinstance(layer, LeakyReLU):
                self.steps.append(("leaky", np.float32(layer.alpha)))
            elif isinstance(layer, Dropout):
                pass
            elif isinstance(layer, MaxPool2D | AvgPool2D):
                if any(layer.padding):
                    raise NotImplementedError("padded pooling in InferenceModel")
                kind = "maxpool" if isinstance(layer, MaxPool2D) else "avgpool"
                self.steps.append((kind, layer.kernel_size, layer.stride))
                oh, ow = layer.output_size(shape[1], shape[2])
                shape = (shape[0], oh, ow)
            elif isinstance(layer, GlobalAvgPool):
                self.steps.append(("gap",))
                shape = (shape[0],)
            elif isinstance(layer, Flatten):
                self.steps.append(("flatten",))
                self._flatten_shape = shape
                shape = (int(np.prod(shape)),)
            elif isinstance(layer, Dense):
                w = layer.params["W"].astype(np.float64)  # (in, out)
                b = layer.params["b"].astype(np.float64) if "b" in layer.params else np.zeros(w.shape[1])
                if fold:
                    s, t = _bn_scale(nxt)
                    w, b = w * s[None, :], b * s + t
                    i += 1
                if self.steps and self.steps[-1][0] == "flatten" and len(self._flatten_shape) == 3:
                    c, h, wd = self._flatten_shape  # rows from (C, H, W) order to the NHWC flatten order
                    w = w.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(c * h * wd, -1)
                self.steps.append(("dense", np.ascontiguousarray(w, np.float32), b.astype(np.float32)))
                shape = (w.shape[1],)
            else:
                raise NotImplementedError(f"InferenceModel does not support {type(layer).__name__}")
            i += 1

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"expected input (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        h = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # NHWC
        for step in self.steps:
            kind = step[0]
            if kind == "conv":
                h = self._conv(h, *step[1:])
            elif kind == "relu":
                np.maximum(h, 0, out=h)
            elif kind == "leaky":
                h = np.where(h > 0, h, h * step[1])
            elif kind == "affine":
                h = h * step[1] + step[2]
            elif kind == "maxpool" or kind == "avgpool":
                h = self._pool(h, kind, *step[1:])
            elif kind == "gap":
                h = h.mean(axis=(1, 2))
            elif kind == "flatten":
                h = h.reshape(len(h), -1)
            elif kind == "dense":
                h = h @ step[1]
                h += step[2]
        return h

    @staticmethod
    def _conv(x: np.ndarray, wm: np.ndarray, b: np.ndarray, kernel, stride, padding) -> np.ndarray:
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        if ph or pw:
            x = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
        n, hh, ww, c = x.shape
        oh, ow = (hh - kh) // sh + 1, (ww - kw) // sw + 1
        if c < 8:  # few channels (the first layer): the window view's copy would move a few floats at a
            # time; KH*KW block copies of (N, OH, OW, C) fill the same columns ~2x faster
            cols = np.empty((n, oh, ow, kh * kw, c), np.float32)
            for u in range(kh):
                for v in range(kw):
                    cols[:, :, :, u * kw + v] = x[:, u:u + (oh - 1) * sh + 1:sh, v:v + (ow - 1) * sw + 1:sw]
            out = cols.reshape(n * oh * ow, -1) @ wm
            out += b
            return out.reshape(n, oh, ow, -1)
        win = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, :(oh - 1) * sh + 1:sh, :(ow - 1) * sw + 1:sw]
        win = win.transpose(0, 1, 2, 4, 5, 3)  # (N, OH, OW, KH, KW, C): one image's columns per [i]
        per_image = oh * ow * kh * kw * c * 4
        step = max(1, COLUMNS_BYTES // per_image)  # columns of a chunk stay in the L2 cache for the matmul
        out = np.empty((n * oh * ow, wm.shape[1]), np.float32)
        buf = np.empty((min(step, n), oh, ow, kh, kw, c), np.float32)
        for s in range(0, n, step):
            m = min(step, n - s)
            np.copyto(buf[:m], win[s:s + m])
            np.matmul(buf[:m].reshape(m * oh * ow, -1), wm, out=out[s * oh * ow:(s + m) * oh * ow])
        out += b
        return out.reshape(n, oh, ow, -1)

    @staticmethod
    def _pool(x: np.ndarray, kind: str, kernel, stride) -> np.ndarray:
        (kh, kw), (sh, sw) = kernel, stride
        n, h, w, c = x.shape
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
        if (kh, kw) == (sh, sw) == (2, 2) and kind == "maxpool":  # the common case: two pairwise maxima
            # over contiguous halves, ~3x faster than a max over the reshape's strided axes
            t = x[:, :oh * 2, :ow * 2].reshape(n, oh, 2, ow, 2 * c)
            m = np.maximum(t[:, :, 0], t[:, :, 1]).reshape(n, oh, ow, 2, c)
            return np.maximum(m[:, :, :, 0], m[:, :, :, 1])
        if (kh, kw) == (sh, sw):  # tiled windows: one reshape
            t = x[:, :oh * kh, :ow * kw].reshape(n, oh, kh, ow, kw, c)
            return t.max(axis=(2, 4)) if kind == "maxpool" else t.mean(axis=(2, 4))
        out = None
        for u in range(kh):
            for v in range(kw):
                view = x[:, u:u + (oh - 1) * sh + 1:sh, v:v + (ow - 1) * sw + 1:sw]
                if out is None:
                    out = view.copy()
                elif kind == "maxpool":
                    np.maximum(out, view, out=out)
                else:
                    out += view
        return out if kind == "maxpool" else out / np.float32(kh * kw)
