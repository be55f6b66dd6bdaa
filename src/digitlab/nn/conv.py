"""Convolution, pooling and batch normalisation, fast, in NumPy.

**Layout.** At the interface every image tensor is NCHW, as in PyTorch, so weights and tests map one
to one. In memory the layers keep activations *channels-last* (NHWC): an output is an NHWC buffer
returned through a transposed view of shape (N, C, H, W) (PyTorch calls this ``channels_last``).
Element-wise NumPy operations keep that memory order, so the next layer gets its NHWC view for free,
and a k x k window over NHWC is KH runs of KW*C contiguous floats: cheap to gather.

**Convolution as one matrix product.** With the window view ``win[n, i, j, kh, kw, c] =
x[n, i*s + kh, j*s + kw, c]`` (``sliding_window_view``, no copy), gathered once into
``cols: (N*OH*OW, KH*KW*C)``, the forward pass is ``y = cols @ Wm + b`` where
``Wm: (KH*KW*C, F)`` is the weight reshaped. The buffers (padded input, columns) are reused from
step to step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from digitlab.nn.init import init_weight
from digitlab.nn.layers import Layer, register

CHUNK_BYTES = 4 << 20  # im2col columns per chunk: a few MB stay in L2/L3 between the copy and the matmul


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    a, b = v
    return int(a), int(b)


def nhwc(x: np.ndarray) -> np.ndarray:
    """The NHWC view of an NCHW-shaped array (a copy only if its memory is not channels-last)."""
    return x.transpose(0, 2, 3, 1)


def nchw(x: np.ndarray) -> np.ndarray:
    """An NHWC array seen as NCHW (no copy)."""
    return x.transpose(0, 3, 1, 2)


class _Buffers:
    """Scratch arrays reused across calls while the shape stays the same."""

    def __init__(self) -> None:
        self._store: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype, zero: bool = False) -> tuple[np.ndarray, bool]:
        buf = self._store.get(name)
        fresh = buf is None or buf.shape != shape or buf.dtype != dtype
        if fresh:
            buf = self._store[name] = (np.zeros if zero else np.empty)(shape, dtype)
        return buf, fresh


def _check4(x: np.ndarray, channels: int | None, who: str) -> None:
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        want = f"(N, {channels}, H, W)" if channels is not None else "(N, C, H, W)"
        raise ValueError(f"{who} expects NCHW input {want}, got shape {x.shape}")


@register
class Conv2D(Layer):
    """2-D convolution (cross-correlation, as PyTorch): ``W: (F, C, KH, KW)``, ``b: (F,)``.

    Forward: ``y[n, f, i, j] = b[f] + sum_{c,kh,kw} W[f, c, kh, kw] * xpad[n, c, i*s + kh, j*s + kw]``,
    computed as ``cols @ Wm`` (module docstring).

    Backward, with ``G = dL/dy`` reshaped to ``(N*OH*OW, F)``:

    - ``dL/dWm = cols.T @ G`` — each weight meets exactly the input values of its column;
    - ``dL/db = sum of G`` over n, i, j;
    - ``dL/dcols = G @ Wm.T``, and since ``cols`` holds copies of input pixels, each pixel's gradient
      is the sum over the windows that contain it: a scatter-add that loops over the KH*KW kernel
      offsets (``dxpad[:, kh::s, kw::s] += dcols[:, :, :, kh, kw]``), never over output pixels.
      For stride 1 the same sum is computed as a convolution of the padded G with the flipped kernel
      (`_input_grad_full`), which is faster; the tests check both paths.

    The batch is processed in chunks of a few MB of columns (``CHUNK_BYTES``) so that each chunk's
    im2col copy is still in cache when the matmul reads it; backward recomputes the columns chunk by
    chunk instead of keeping the whole (N*OH*OW, KH*KW*C) matrix alive.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=0,
                 bias: bool = True, init: str = "he", seed: int | None = 0, dtype=np.float32) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        self.bias, self.init = bias, init
        kh, kw = self.kernel_size
        fan_in, fan_out = in_channels * kh * kw, out_channels * kh * kw
        rng = np.random.default_rng(seed)
        self.params["W"] = init_weight(init, (out_channels, in_channels, kh, kw), fan_in, fan_out, rng, dtype)
        self.grads["W"] = np.zeros_like(self.params["W"])
        if bias:
            self.params["b"] = np.zeros(out_channels, dtype)
            self.grads["b"] = np.zeros_like(self.params["b"])
        self.buf = _Buffers()

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1

    def _weight_matrix(self) -> np.ndarray:
        f, c, kh, kw = self.params["W"].shape
        return self.params["W"].transpose(2, 3, 1, 0).reshape(kh * kw * c, f)

    def _columns(self, xp: np.ndarray, start: int, stop: int, oh: int, ow: int) -> np.ndarray:
        """im2col of images ``start:stop`` into the reused chunk buffer: ``(B*OH*OW, KH*KW*C)``."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        c = xp.shape[3]
        win = sliding_window_view(xp[start:stop], (kh, kw), axis=(1, 2))
        win = win[:, :(oh - 1) * sh + 1:sh, :(ow - 1) * sw + 1:sw].transpose(0, 1, 2, 4, 5, 3)
        cols, _ = self.buf.get(f"cols{stop - start}", win.shape, xp.dtype)
        np.copyto(cols, win)
        return cols.reshape(-1, kh * kw * c)

    def _chunk(self, oh: int, ow: int) -> int:
        """Images per chunk, so that a chunk's columns (and their gradient) stay in the CPU cache."""
        kh, kw = self.kernel_size
        per_image = oh * ow * kh * kw * self.in_channels * self.params["W"].itemsize
        return max(1, CHUNK_BYTES // per_image)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        _check4(x, self.in_channels, f"Conv2D({self.in_channels}, {self.out_channels})")
        n, c, h, w = x.shape
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        oh, ow = self.output_size(h, w)
        if oh < 1 or ow < 1:
            raise ValueError(f"Conv2D: input {h}x{w} is smaller than the kernel {kh}x{kw} (padding {ph},{pw})")
        xh = nhwc(x)
        if ph or pw:
            xp, _ = self.buf.get("pad", (n, h + 2 * ph, w + 2 * pw, c), x.dtype, zero=True)
            xp[:, ph:ph + h, pw:pw + w, :] = xh  # the border stays zero from allocation
        else:
            xp = xh
        self.xp, self.in_shape = xp, (n, c, h, w)
        wm = self._weight_matrix().astype(x.dtype, copy=False)
        y = np.empty((n, oh, ow, self.out_channels), x.dtype)
        step = self._chunk(oh, ow)
        for s in range(0, n, step):
            e = min(n, s + step)
            np.matmul(self._columns(xp, s, e, oh, ow), wm, out=y[s:e].reshape(-1, self.out_channels))
        if self.bias:
            y += self.params["b"]
        return nchw(y)

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        n, c, h, w = self.in_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        f = self.out_channels
        oh, ow = dout.shape[2], dout.shape[3]
        g = np.ascontiguousarray(nhwc(dout))
        wm = self._weight_matrix()
        dwm = np.zeros_like(wm)
        step = self._chunk(oh, ow)
        for s in range(0, n, step):
            e = min(n, s + step)
            dwm += self._columns(self.xp, s, e, oh, ow).T @ g[s:e].reshape(-1, f)  # recomputed while in cache
        self.grads["W"][...] = dwm.reshape(kh, kw, c, f).transpose(3, 2, 0, 1)
        if self.bias:
            np.sum(g.reshape(-1, f), axis=0, out=self.grads["b"])
        if not self.need_input_grad:
            return None
        dxp = self._input_grad_full(g) if (sh, sw) == (1, 1) else self._input_grad_scatter(g, wm)
        return nchw(dxp[:, ph:ph + h, pw:pw + w, :])

    def _input_grad_scatter(self, g: np.ndarray, wm: np.ndarray) -> np.ndarray:
        """dL/dxpad by scatter-add: ``dcols = G @ Wm.T``, then one strided add per kernel offset."""
        n, c, h, w = self.in_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        _, oh, ow, f = g.shape
        dxp = np.zeros((n, h + 2 * ph, w + 2 * pw, c), g.dtype)
        step = self._chunk(oh, ow)
        for s in range(0, n, step):
            e = min(n, s + step)
            dcols = (g[s:e].reshape(-1, f) @ wm.T).reshape(e - s, oh, ow, kh, kw, c)
            dx_chunk = dxp[s:e]
            for i in range(kh):
                for j in range(kw):
                    dx_chunk[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :] += dcols[:, :, :, i, j, :]
        return dxp

    def _input_grad_full(self, g: np.ndarray) -> np.ndarray:
        """dL/dxpad for stride 1 as a convolution: the gradient, zero-padded by the kernel size less one,
        correlated with the kernel flipped in both axes and its channel axes swapped:
        ``dxpad[n, y, x, c] = sum_{u, v, f} gpad[n, y + u, x + v, f] * W[f, c, KH-1-u, KW-1-v]``.
        The scatter gives the same numbers; as one matmul with inner size KH*KW*F it runs about twice as
        fast, because ``G @ Wm.T`` has inner size F only (measured: conv 32->32 on 26x26)."""
        n, c, h, w = self.in_shape
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        _, oh, ow, f = g.shape
        hp, wp = h + 2 * ph, w + 2 * pw
        gp, _ = self.buf.get("gpad", (n, oh + 2 * (kh - 1), ow + 2 * (kw - 1), f), g.dtype, zero=True)
        gp[:, kh - 1:kh - 1 + oh, kw - 1:kw - 1 + ow] = g
        wflip = self.params["W"][:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(kh * kw * f, c)
        dxp = np.empty((n, hp, wp, c), g.dtype)
        per_image = hp * wp * kh * kw * f * g.itemsize
        step = max(1, CHUNK_BYTES // per_image)
        for s in range(0, n, step):
            e = min(n, s + step)
            win = sliding_window_view(gp[s:e], (kh, kw), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3)
            cols, _ = self.buf.get(f"gcols{e - s}", win.shape, g.dtype)
            np.copyto(cols, win)
            np.matmul(cols.reshape(-1, kh * kw * f), wflip, out=dxp[s:e].reshape(-1, c))
        return dxp

    def spec(self) -> dict[str, Any]:
        return {"type": "Conv2D", "in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "bias": self.bias, "init": self.init}


class _Pool(Layer):
    """Shared window bookkeeping of the pooling layers.

    Windows are never copied: for each of the KH*KW kernel offsets ``(u, v)``, the input values at that
    offset of every window form one strided view ``xpad[:, u::s, v::s]`` of output size. Forward and
    backward are KH*KW element-wise operations on such views, never a loop over output pixels.
    """

    def __init__(self, kernel_size=2, stride=None, padding=0) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride if stride is not None else kernel_size)
        self.padding = _pair(padding)
        if self.padding[0] * 2 > self.kernel_size[0] or self.padding[1] * 2 > self.kernel_size[1]:
            raise ValueError("pool padding must be at most half the kernel size (as in PyTorch)")

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"{type(self).__name__}: input {h}x{w} is smaller than the window {kh}x{kw}")
        return oh, ow

    def _overlapping(self) -> bool:
        return self.stride[0] < self.kernel_size[0] or self.stride[1] < self.kernel_size[1]

    def _padded(self, xh: np.ndarray, fill: float) -> np.ndarray:
        ph, pw = self.padding
        if not (ph or pw):
            return xh
        n, h, w, c = xh.shape
        xp = np.full((n, h + 2 * ph, w + 2 * pw, c), fill, xh.dtype)
        xp[:, ph:ph + h, pw:pw + w] = xh
        return xp

    def _offsets(self, xp: np.ndarray, oh: int, ow: int):
        """``(k, view)`` for each kernel offset in row-major order; ``view`` is ``(N, OH, OW, C)``."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        for u in range(kh):
            for v in range(kw):
                yield u * kw + v, xp[:, u:u + (oh - 1) * sh + 1:sh, v:v + (ow - 1) * sw + 1:sw]

    def spec(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding)}


@register
class MaxPool2D(_Pool):
    """Max over each window. The gradient goes to exactly one element per window: the first maximum
    in row-major window order (PyTorch's rule), so ties are broken deterministically; where
    overlapping windows pick the same element, their gradients add up.

    ``dL/dx[p] = sum over windows w with argmax(w) = p of dL/dy[w]``.
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        _check4(x, None, "MaxPool2D")
        n, c, h, w = x.shape
        oh, ow = self.output_size(h, w)
        xp = self._padded(nhwc(x), -np.inf)
        views = [view for _, view in self._offsets(xp, oh, ow)]
        out = views[0].copy()
        for view in views[1:]:
            np.maximum(out, view, out=out)
        # index of the first offset holding the max: arg = sum_k prod_{j<=k} [v_j != max]
        arg = np.zeros(out.shape, np.uint8 if len(views) < 256 else np.int32)
        not_yet = np.ones(out.shape, np.uint8)
        for view in views[:-1]:
            not_yet &= (view != out).view(np.uint8)
            arg += not_yet
        self.arg, self.shapes = arg, (x.shape, xp.shape)
        return nchw(out)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        (n, c, h, w), padded_shape = self.shapes
        g = nhwc(dout)
        oh, ow = g.shape[1:3]
        kh, kw = self.kernel_size
        tiled = not self._overlapping() and padded_shape[1] == oh * kh and padded_shape[2] == ow * kw
        dxp = (np.empty if tiled else np.zeros)(padded_shape, dout.dtype)
        for k, view in self._offsets(dxp, oh, ow):
            if self._overlapping():
                view += g * (self.arg == k)
            else:  # every input element is in at most one window: write, don't add
                np.multiply(g, self.arg == k, out=view)
        ph, pw = self.padding
        return nchw(dxp[:, ph:ph + h, pw:pw + w])


@register
class AvgPool2D(_Pool):
    """Mean over each window (zero padding counted, as PyTorch's default ``count_include_pad``).

    Every element of a window gets ``dL/dy / (KH*KW)``; overlapping windows add up.
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        _check4(x, None, "AvgPool2D")
        n, c, h, w = x.shape
        oh, ow = self.output_size(h, w)
        xp = self._padded(nhwc(x), 0.0)
        self.shapes = (x.shape, xp.shape)
        out = np.zeros((n, oh, ow, c), x.dtype)
        for _, view in self._offsets(xp, oh, ow):
            out += view
        out *= x.dtype.type(1 / (self.kernel_size[0] * self.kernel_size[1]))
        return nchw(out)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        (n, c, h, w), padded_shape = self.shapes
        g = nhwc(dout) * dout.dtype.type(1 / (self.kernel_size[0] * self.kernel_size[1]))
        dxp = np.zeros(padded_shape, dout.dtype)
        for _, view in self._offsets(dxp, *g.shape[1:3]):
            view += g
        ph, pw = self.padding
        return nchw(dxp[:, ph:ph + h, pw:pw + w])


@register
class GlobalAvgPool(Layer):
    """``(N, C, H, W) -> (N, C)``: mean over H and W; each pixel gets ``dL/dy / (H*W)``."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        _check4(x, None, "GlobalAvgPool")
        self.shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        n, c, h, w = self.shape
        g = (dout * dout.dtype.type(1 / (h * w)))[:, None, None, :]
        return nchw(np.ascontiguousarray(np.broadcast_to(g, (n, h, w, c))))


@register
class BatchNorm(Layer):
    """Batch normalisation over (N,) for ``(N, C)`` inputs or (N, H, W) for ``(N, C, H, W)``.

    Training: ``xhat = (x - mu) / sqrt(var + eps)`` with the batch mean and biased variance per channel,
    ``y = gamma * xhat + beta``; the running averages move by ``momentum`` (the running variance uses
    the unbiased estimate, as PyTorch). Evaluation uses the running averages.

    Backward over the m = N(*H*W) values of a channel, with ``gh = dL/dy * gamma``:
    ``dL/dx = (gh - mean(gh) - xhat * mean(gh * xhat)) / sqrt(var + eps)`` — the two means are the
    paths through mu and var; ``dL/dgamma = sum(dL/dy * xhat)``, ``dL/dbeta = sum(dL/dy)``.
    In evaluation mode the statistics are constants and ``dL/dx = gh / sqrt(running_var + eps)``.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, seed: int | None = 0,
                 dtype=np.float32) -> None:
        super().__init__()
        self.num_features, self.momentum, self.eps = num_features, momentum, eps
        self.params["gamma"] = np.ones(num_features, dtype)
        self.params["beta"] = np.zeros(num_features, dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers["running_mean"] = np.zeros(num_features, dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype)

    def _rows(self, x: np.ndarray) -> np.ndarray:
        """(m, C) view of the input, channels last."""
        if x.ndim == 2:
            return x
        return nhwc(x).reshape(-1, x.shape[1])

    def _unrows(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if len(shape) == 2:
            return rows
        n, c, h, w = shape
        return nchw(rows.reshape(n, h, w, c))

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if x.ndim not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm({self.num_features}) expects (N, {self.num_features}) or "
                             f"(N, {self.num_features}, H, W), got {x.shape}")
        rows = self._rows(x)
        t = x.dtype.type
        if training:
            m = rows.shape[0]
            if m < 2:
                raise ValueError("BatchNorm in training needs more than one value per channel (batch of 1?)")
            mean = self._colsum(rows) * t(1 / m)  # column sums as a matmul: 5x faster than .sum(axis=0)
            centred = rows - mean
            var = np.einsum("mc,mc->c", centred, centred) * t(1 / m)
            mom = t(self.momentum)
            self.buffers["running_mean"] *= 1 - mom
            self.buffers["running_mean"] += mom * mean
            self.buffers["running_var"] *= 1 - mom
            self.buffers["running_var"] += mom * var * t(m / (m - 1))
        else:
            centred = rows - self.buffers["running_mean"]
            var = self.buffers["running_var"]
        self.training = training
        self.inv_std = 1 / np.sqrt(var + t(self.eps))
        self.xhat = centred
        self.xhat *= self.inv_std
        self.shape = x.shape
        out = self.xhat * self.params["gamma"]
        out += self.params["beta"]
        return self._unrows(out, x.shape)

    def _colsum(self, rows: np.ndarray) -> np.ndarray:
        ones = getattr(self, "_ones", None)
        if ones is None or ones.shape[0] != rows.shape[0] or ones.dtype != rows.dtype:
            ones = self._ones = np.ones(rows.shape[0], rows.dtype)
        return ones @ rows

    def backward(self, dout: np.ndarray) -> np.ndarray:
        g = self._rows(dout)
        self.grads["beta"][...] = self._colsum(g)
        self.grads["gamma"][...] = np.einsum("mc,mc->c", g, self.xhat)
        scale = self.params["gamma"] * self.inv_std
        if not self.training:
            return self._unrows(g * scale, self.shape)
        m = g.shape[0]
        t = g.dtype.type
        dx = self.xhat * (self.grads["gamma"] * t(-1 / m))
        dx += g
        dx -= self.grads["beta"] * t(1 / m)
        dx *= scale
        return self._unrows(dx, self.shape)

    def spec(self) -> dict[str, Any]:
        return {"type": "BatchNorm", "num_features": self.num_features, "momentum": self.momentum, "eps": self.eps}
