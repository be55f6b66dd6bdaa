"""Convolution, pooling and batch normalisation, fast, in NumPy.

**Layout.** At the interface every image tensor is NCHW, as in PyTorch, so weights and tests map one
to one. In memory the layers keep activations *channels-last* (NHWC): an output is an NHWC buffer
returned through a transposed view of shape (N, C, H, W) (PyTorch calls this ``channels_last``).
Element-wise NumPy operations keep that memory order, so the next layer gets its NHWC view for free,
and a k x k window over NHWC is KH runs of KW*C contiguous floats: cheap to gather.

**Convolution as one matrix product.** With the window view ``win[n, i, j, kh, kw, c] =
x[n, i*s + kh, j*s + kw, c]`` (``sliding_window_view``, no copy), gathered into
``cols: (N*OH*OW, KH*KW*C)``, the forward pass is ``y = cols @ Wm + b`` where
``Wm: (KH*KW*C, F)`` is the weight reshaped.

**Chunks and workers.** Every layer here cuts the batch into chunks of a few hundred KB of scratch
memory (``CHUNK_BYTES``) and runs each chunk's whole recipe (pad, gather, multiply, element-wise
work) while its data is in the CPU cache; the chunks are shared out among worker threads
(`digitlab.nn.parallel`), so the element-wise passes, which NumPy runs on one core, use every core
too. Per-chunk partial sums (weight gradients, batch statistics) are added in chunk order. Scratch
buffers are kept per worker and reused from call to call.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from digitlab.nn import parallel
from digitlab.nn.init import init_weight
from digitlab.nn.layers import Layer, register

CHUNK_BYTES = 1 << 20  # scratch memory per chunk: this machine's L2 cache is 1.25 MB per core


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


def _sum_in_order(parts: list[np.ndarray]) -> np.ndarray:
    """Partial sums added in chunk order (deterministic, whatever thread computed which part)."""
    total = parts[0].copy()
    for p in parts[1:]:
        total += p
    return total


class _Buffers:
    """Scratch arrays reused across calls while the shape stays the same."""

    def __init__(self) -> None:
        self._store: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype, fill: float | None = None) -> np.ndarray:
        """The buffer ``name`` with this shape and dtype; a new one is filled with ``fill`` (if given),
        and an old one keeps what the last user left in it (callers rely on that for padding borders,
        which nobody writes)."""
        buf = self._store.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._store[name] = np.empty(shape, dtype) if fill is None else np.full(shape, fill, dtype)
        return buf


def _result(layer: Layer, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array for a layer's result: a reused buffer when the layer's ``reuse_outputs``
    is set (see `digitlab.nn.layers.Layer`), else a fresh array."""
    return layer.buf.get(f"result_{name}", shape, np.dtype(dtype)) if layer.reuse_outputs else np.empty(shape, dtype)


def _check4(x: np.ndarray, channels: int | None, who: str) -> None:
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        want = f"(N, {channels}, H, W)" if channels is not None else "(N, C, H, W)"
        raise ValueError(f"{who} expects NCHW input {want}, got shape {x.shape}")


def _chunks(n: int, item_bytes: int, scale: int = 1) -> list[tuple[int, int]]:
    return parallel.spans(n, item_bytes, scale * CHUNK_BYTES)


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
      For stride 1 the same sum is computed as a convolution: G, zero-padded by the kernel size less
      one, correlated with the kernel flipped in both axes and its channel axes swapped,
      ``dxpad[n, y, x, c] = sum_{u, v, f} gpad[n, y + u, x + v, f] * W[f, c, KH-1-u, KW-1-v]``,
      evaluated only at the positions of the unpadded input. It gives the same numbers as the
      scatter, and as one matmul with inner size KH*KW*F it runs about twice as fast, because
      ``G @ Wm.T`` has inner size F only (measured: conv 32->32 on 26x26); the tests check both paths.

    With stride 1 the gradient's columns ``gcols[n, y, x, u, v, f] = gpad[n, y + u, x + v, f]`` also
    give the weight gradient without gathering the input's columns again: with ``u = KH-1-kh``,
    ``v = KW-1-kw`` an entry is ``dL/dy[n, y + ph - kh, x + pw - kw, f]`` (zero outside), so
    ``dL/dW[f, c, kh, kw] = sum_{n,y,x} x[n, y, x, c] * gcols[n, y, x, u, v, f]``: one product
    ``gcols.T @ x`` (the sum runs over the unpadded input, as padding contributes zeros).

    Backward recomputes each chunk's columns (they are still in cache for both products) instead of
    keeping the whole (N*OH*OW, KH*KW*C) matrix alive from forward.
    """

    batch_parallel = True  # brings its own worker threads (see `digitlab.nn.parallel`)

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

    def _weight_matrix(self, dtype) -> np.ndarray:
        f, c, kh, kw = self.params["W"].shape
        return self.params["W"].transpose(2, 3, 1, 0).reshape(kh * kw * c, f).astype(dtype, copy=False)

    def _chunks(self, n: int, h: int, w: int, oh: int, ow: int, itemsize: int,
                input_grad: bool = False, full: bool = False) -> list[tuple[int, int]]:
        """Chunks of images whose columns fill about ``CHUNK_BYTES``: the input's, the gradient's
        too with ``input_grad``, the gradient's alone with ``full`` (stride-1 backward)."""
        kh, kw = self.kernel_size
        grad_cols = h * w * self.out_channels if input_grad or full else 0
        per_image = ((0 if full else oh * ow * self.in_channels) + grad_cols) * kh * kw
        # backward with small images gets chunks of twice the room: its thin products (F or C
        # columns) gain from more rows more than they lose by leaving the cache (measured, conv
        # 64->64 on 10x10: 28 -> 24 ms a batch of 128 single-threaded; not so for 26x26 images, which
        # would go from one to two a chunk, nor for BatchNorm and pooling)
        big = (input_grad or full) and per_image * itemsize <= CHUNK_BYTES // 2
        return _chunks(n, per_image * itemsize, 2 if big else 1)

    def _windows(self, xp: np.ndarray, oh: int, ow: int) -> np.ndarray:
        """The im2col view of a padded NHWC array, no copy: ``win[n, i, j, kh, kw, c]``."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        win = sliding_window_view(xp, (kh, kw), axis=(1, 2))
        return win[:, :(oh - 1) * sh + 1:sh, :(ow - 1) * sw + 1:sw].transpose(0, 1, 2, 4, 5, 3)

    def _gather_single(self, xp: np.ndarray, s: int, e: int, size: int, oh: int, ow: int, name: str) -> np.ndarray:
        """For one input channel: the columns of images ``s:e`` transposed, ``(KH*KW, B*OH*OW)``, one
        strided copy per kernel offset. (The row-major columns of a 1-channel image are runs of KW
        floats, which NumPy copies one by one: this is 5x faster; BLAS takes the transpose as it is.)"""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        cols = self.buf.get(name, (kh * kw, size, oh, ow), xp.dtype)[:, :e - s]
        for u in range(kh):
            for v in range(kw):
                cols[u * kw + v] = xp[s:e, u:u + (oh - 1) * sh + 1:sh, v:v + (ow - 1) * sw + 1:sw, 0]
        return cols.reshape(kh * kw, -1)

    def _gather(self, win: np.ndarray, s: int, e: int, size: int, name: str) -> np.ndarray:
        """Copy the windows of images ``s:e`` into the reused buffer ``name``: ``(B*OH*OW, KH*KW*C)``."""
        cols = self.buf.get(name, (size, *win.shape[1:]), win.dtype)[:e - s]
        np.copyto(cols, win[s:e])
        return cols.reshape(-1, math.prod(win.shape[3:]))

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        _check4(x, self.in_channels, f"Conv2D({self.in_channels}, {self.out_channels})")
        n, c, h, w = x.shape
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        oh, ow = self.output_size(h, w)
        if oh < 1 or ow < 1:
            raise ValueError(f"Conv2D: input {h}x{w} is smaller than the kernel {kh}x{kw} (padding {ph},{pw})")
        xh = nhwc(x)
        # the padded input stays (in a reused buffer) for backward; its border is zero from allocation
        xp = self.buf.get("pad", (n, h + 2 * ph, w + 2 * pw, c), x.dtype, fill=0.0) if ph or pw else xh
        self.xp, self.in_shape = xp, (n, c, h, w)
        win = self._windows(xp, oh, ow)
        wm = self._weight_matrix(x.dtype)
        f = self.out_channels
        bias = self.params["b"].astype(x.dtype, copy=False) if self.bias else None
        y = _result(self, "y", (n, oh, ow, f), x.dtype)
        chunks = self._chunks(n, h, w, oh, ow, x.itemsize)
        size = chunks[0][1] - chunks[0][0]

        def chunk(s: int, e: int, worker: int) -> None:
            if xp is not xh:
                xp[s:e, ph:ph + h, pw:pw + w] = xh[s:e]
            out = y[s:e].reshape(-1, f)
            if c == 1:
                np.matmul(self._gather_single(xp, s, e, size, oh, ow, f"cols{worker}").T, wm, out=out)
            else:
                np.matmul(self._gather(win, s, e, size, f"cols{worker}"), wm, out=out)
            if bias is not None:
                out += bias

        parallel.map_spans(chunk, chunks)
        return nchw(y)

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        n, c, h, w = self.in_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        f = self.out_channels
        oh, ow = dout.shape[2], dout.shape[3]
        g = nhwc(dout)
        win = self._windows(self.xp, oh, ow)
        need_dx = self.need_input_grad
        dxh = _result(self, "dx", (n, h, w, c), dout.dtype) if need_dx else None
        full = need_dx and (sh, sw) == (1, 1)
        # dL/dW from the gradient's columns costs h*w instead of oh*ow rows: worth it while that is
        # small next to the gather it saves (measured: conv 32->32 on 26x26 10 % faster, on 12x12 and
        # 10x10, 44 % and 56 % more rows, 3-10 % slower)
        dw_from_gcols = full and h * w <= 1.25 * oh * ow
        chunks = self._chunks(n, h, w, oh, ow, dout.itemsize, input_grad=need_dx, full=dw_from_gcols)
        size = chunks[0][1] - chunks[0][0]
        if full:
            # stride 1: dL/dx is the gradient, zero-padded by the kernel size less one, correlated with
            # the kernel flipped in both axes, its channel axes swapped (class docstring); the same
            # gradient columns give dL/dW against the input, so its columns are not gathered again
            gp = self.buf.get("gpad", (n, oh + 2 * (kh - 1), ow + 2 * (kw - 1), f), dout.dtype, fill=0.0)
            gwin = sliding_window_view(gp, (kh, kw), axis=(1, 2))[:, ph:ph + h, pw:pw + w].transpose(0, 1, 2, 4, 5, 3)
            wflip = self.params["W"][:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(kh * kw * f, c).astype(dout.dtype)
            xin = self.xp[:, ph:ph + h, pw:pw + w]  # the input, NHWC (the padded buffer's interior)
        else:
            wm = self._weight_matrix(dout.dtype)

        def chunk(s: int, e: int, worker: int) -> tuple[np.ndarray, np.ndarray | None]:
            gc = g[s:e].reshape(-1, f)  # a view when dout is channels-last, else a copy of this chunk
            db = gc.sum(axis=0) if self.bias else None
            if full:
                gp[s:e, kh - 1:kh - 1 + oh, kw - 1:kw - 1 + ow] = g[s:e]
                gcols = self._gather(gwin, s, e, size, f"gcols{worker}")
                np.matmul(gcols, wflip, out=dxh[s:e].reshape(-1, c))
                if dw_from_gcols:
                    return gcols.T @ xin[s:e].reshape(-1, c), db  # rows (KH-1-kh, KW-1-kw, f), columns c
            if c == 1:
                dwm = self._gather_single(self.xp, s, e, size, oh, ow, f"bcols{worker}") @ gc
            else:
                dwm = self._gather(win, s, e, size, f"bcols{worker}").T @ gc
            if need_dx and not full:
                self._input_grad_scatter(gc, e - s, size, wm, dxh[s:e], worker)
            return dwm, db

        parts = parallel.map_spans(chunk, chunks)
        dwm = _sum_in_order([p[0] for p in parts])
        if dw_from_gcols:
            self.grads["W"][...] = dwm.reshape(kh, kw, f, c)[::-1, ::-1].transpose(2, 3, 0, 1)
        else:
            self.grads["W"][...] = dwm.reshape(kh, kw, c, f).transpose(3, 2, 0, 1)
        if self.bias:
            self.grads["b"][...] = _sum_in_order([p[1] for p in parts])
        return nchw(dxh) if dxh is not None else None

    def _input_grad_scatter(self, gc: np.ndarray, b: int, size: int, wm: np.ndarray, out: np.ndarray,
                            worker: int) -> None:
        """dL/dx of one chunk by scatter-add: ``dcols = G @ Wm.T``, then one strided add per kernel
        offset into the padded gradient, whose interior is the result."""
        _, h, w, c = out.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = self.output_size(h, w)
        dcols = (gc @ wm.T).reshape(b, oh, ow, kh, kw, c)
        if ph or pw:
            dxp = self.buf.get(f"dxpad{worker}", (size, h + 2 * ph, w + 2 * pw, c), out.dtype)[:b]
        else:
            dxp = out
        dxp[...] = 0
        for i in range(kh):
            for j in range(kw):
                dxp[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw, :] += dcols[:, :, :, i, j, :]
        if dxp is not out:
            out[...] = dxp[:, ph:ph + h, pw:pw + w]

    def spec(self) -> dict[str, Any]:
        return {"type": "Conv2D", "in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "bias": self.bias, "init": self.init}


class _Pool(Layer):
    """Shared window bookkeeping of the pooling layers.

    Windows are never copied: for each of the KH*KW kernel offsets ``(u, v)``, the input values at that
    offset of every window form one strided view ``xpad[:, u::s, v::s]`` of output size. Forward and
    backward are KH*KW element-wise operations on such views, never a loop over output pixels; they
    run chunk by chunk on the workers, like the convolution.
    """

    batch_parallel = True

    def __init__(self, kernel_size=2, stride=None, padding=0) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride if stride is not None else kernel_size)
        self.padding = _pair(padding)
        if self.padding[0] * 2 > self.kernel_size[0] or self.padding[1] * 2 > self.kernel_size[1]:
            raise ValueError("pool padding must be at most half the kernel size (as in PyTorch)")
        self.buf = _Buffers()

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"{type(self).__name__}: input {h}x{w} is smaller than the window {kh}x{kw}")
        return oh, ow

    def _overlapping(self) -> bool:
        return self.stride[0] < self.kernel_size[0] or self.stride[1] < self.kernel_size[1]

    def _chunks(self, shape: tuple[int, ...], itemsize: int) -> list[tuple[int, int]]:
        n, c, h, w = shape
        ph, pw = self.padding
        return _chunks(n, (h + 2 * ph) * (w + 2 * pw) * c * itemsize)

    def _padded(self, name: str, shape: tuple[int, ...], dtype, fill: float) -> np.ndarray | None:
        """The reused NHWC buffer for the padded input (or its gradient), its border ``fill`` from
        allocation; None without padding."""
        n, c, h, w = shape
        ph, pw = self.padding
        return self.buf.get(name, (n, h + 2 * ph, w + 2 * pw, c), dtype, fill=fill) if ph or pw else None

    def _offsets(self, xp: np.ndarray, oh: int, ow: int) -> list[np.ndarray]:
        """One view per kernel offset, in row-major order: ``views[k][n, i, j, c] = xp[n, i*s + u, j*s + v, c]``
        with ``k = u*KW + v``."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return [xp[:, u:u + (oh - 1) * sh + 1:sh, v:v + (ow - 1) * sw + 1:sw] for u in range(kh) for v in range(kw)]

    def _scatter(self, dout: np.ndarray, add) -> np.ndarray:
        """The input gradient (NCHW view of NHWC memory), chunk by chunk: ``add(views, s, e, tiled, worker)``
        puts the share of every kernel offset into ``views[k][s:e]``, views of the padded gradient. That
        is zeroed first, unless the windows tile it exactly (every element in one window): then ``add``
        may overwrite instead of adding."""
        n, c, h, w = self.in_shape
        ph, pw = self.padding
        oh, ow = dout.shape[2:]
        dxh = _result(self, "dx", (n, h, w, c), dout.dtype)
        dxp = self._padded("dxpad", self.in_shape, dout.dtype, 0.0)
        dxp = dxh if dxp is None else dxp
        tiled = not self._overlapping() and dxp.shape[1] == oh * self.kernel_size[0] \
            and dxp.shape[2] == ow * self.kernel_size[1]
        views = self._offsets(dxp, oh, ow)

        def chunk(s: int, e: int, worker: int) -> None:
            if not tiled:
                dxp[s:e] = 0
            add(views, s, e, tiled, worker)
            if dxp is not dxh:
                dxh[s:e] = dxp[s:e, ph:ph + h, pw:pw + w]

        parallel.map_spans(chunk, self._chunks(self.in_shape, dout.itemsize))
        return nchw(dxh)

    def spec(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding)}


@register
class MaxPool2D(_Pool):
    """Max over each window. The gradient goes to exactly one element per window: the first maximum
    in row-major window order (PyTorch's rule), so ties are broken deterministically; where
    overlapping windows pick the same element, their gradients add up.

    ``dL/dx[p] = sum over windows w with argmax(w) = p of dL/dy[w]``.

    Forward keeps, per window, the offset ``arg`` of its first maximum (one byte): with ``m`` the
    window maximum, ``arg = sum_k prod_{j<=k} [v_j != m]`` counts the offsets before the first hit.

    **ReLU fused.** As in `BatchNorm`, `Sequential` sets ``relu`` when a ReLU follows: forward then
    returns ``max(m, 0)``, and the windows whose maximum is not positive (where the ReLU's gradient is
    zero) get an ``arg`` that matches no offset, so backward, unchanged, gives them no gradient.
    """

    fuses_relu = True
    relu = False

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        _check4(x, None, "MaxPool2D")
        n, c, h, w = x.shape
        ph, pw = self.padding
        oh, ow = self.output_size(h, w)
        xh = nhwc(x)
        xp = self._padded("pad", x.shape, x.dtype, -np.inf)
        views = self._offsets(xh if xp is None else xp, oh, ow)
        out = _result(self, "y", (n, oh, ow, c), x.dtype)
        arg = _result(self, "arg", (n, oh, ow, c), np.uint8 if len(views) < 256 else np.int32)
        none = np.iinfo(arg.dtype).max  # no offset (at most 254): where the fused ReLU's gradient is zero
        chunks = self._chunks(x.shape, x.itemsize)
        size = chunks[0][1] - chunks[0][0]
        relu = self.relu

        def chunk(s: int, e: int, worker: int) -> None:
            if xp is not None:
                xp[s:e, ph:ph + h, pw:pw + w] = xh[s:e]
            o, a = out[s:e], arg[s:e]
            np.copyto(o, views[0][s:e])
            for view in views[1:]:
                np.maximum(o, view[s:e], out=o)
            a[...] = 0
            not_yet = self.buf.get(f"not_yet{worker}", (size, oh, ow, c), np.bool_)[:e - s]
            differs = self.buf.get(f"differs{worker}", (size, oh, ow, c), np.bool_)[:e - s]
            not_yet[...] = True
            for view in views[:-1]:
                np.not_equal(view[s:e], o, out=differs)
                not_yet &= differs
                a += not_yet
            if relu:
                np.less_equal(o, 0, out=differs)
                if a.dtype == np.uint8:  # arg = max(arg, 255 * [m <= 0]), in uint8 arithmetic
                    np.maximum(a, np.multiply(differs.view(np.uint8), np.uint8(none), out=not_yet.view(np.uint8)),
                               out=a)
                else:
                    a[differs] = none
                np.maximum(o, self.buf.get(f"zeros{worker}", (size, oh, ow, c), x.dtype, fill=0.0)[:e - s], out=o)

        parallel.map_spans(chunk, chunks)
        self.arg, self.in_shape = arg, x.shape
        return nchw(out)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        g, arg = nhwc(dout), self.arg
        size = self._chunks(self.in_shape, dout.itemsize)[0][1]

        def add(views: list[np.ndarray], s: int, e: int, tiled: bool, worker: int) -> None:
            gc, a = g[s:e], arg[s:e]
            hit = self.buf.get(f"hit{worker}", (size, *gc.shape[1:]), np.bool_)[:e - s]
            for k, view in enumerate(views):
                np.equal(a, k, out=hit)
                if tiled:  # every input element is in exactly one window: write, don't add
                    np.multiply(gc, hit, out=view[s:e])
                else:
                    view[s:e] += gc * hit

        return self._scatter(dout, add)


@register
class AvgPool2D(_Pool):
    """Mean over each window (zero padding counted, as PyTorch's default ``count_include_pad``).

    Every element of a window gets ``dL/dy / (KH*KW)``; overlapping windows add up.
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        _check4(x, None, "AvgPool2D")
        n, c, h, w = x.shape
        ph, pw = self.padding
        oh, ow = self.output_size(h, w)
        xh = nhwc(x)
        xp = self._padded("pad", x.shape, x.dtype, 0.0)
        views = self._offsets(xh if xp is None else xp, oh, ow)
        out = _result(self, "y", (n, oh, ow, c), x.dtype)
        scale = x.dtype.type(1 / len(views))

        def chunk(s: int, e: int, worker: int) -> None:
            if xp is not None:
                xp[s:e, ph:ph + h, pw:pw + w] = xh[s:e]
            o = out[s:e]
            np.copyto(o, views[0][s:e])
            for view in views[1:]:
                o += view[s:e]
            o *= scale

        parallel.map_spans(chunk, self._chunks(x.shape, x.itemsize))
        self.in_shape = x.shape
        return nchw(out)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        g = nhwc(dout)
        scale = dout.dtype.type(1 / (self.kernel_size[0] * self.kernel_size[1]))

        def add(views: list[np.ndarray], s: int, e: int, tiled: bool, worker: int) -> None:
            share = g[s:e] * scale
            for view in views:
                if tiled:
                    np.copyto(view[s:e], share)
                else:
                    view[s:e] += share

        return self._scatter(dout, add)


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
    the unbiased estimate, as PyTorch). Evaluation uses the running averages. The output is computed
    as ``y = x * a + (beta - mu * a)`` with ``a = gamma / sqrt(var + eps)``, as PyTorch does.

    The statistics come from one pass over the chunks: each chunk of ``r`` values gives its mean
    ``mu_k`` and its sum of squared deviations ``M_k``; they combine exactly (Chan, Golub & LeVeque
    1979) into ``mu = sum_k r_k mu_k / m`` and ``M = sum_k (M_k + r_k (mu_k - mu)^2)``, ``var = M / m``.

    Backward over the m = N(*H*W) values of a channel, with ``gh = dL/dy * gamma``:
    ``dL/dx = (gh - mean(gh) - xhat * mean(gh * xhat)) / sqrt(var + eps)`` — the two means are the
    paths through mu and var; ``dL/dgamma = sum(dL/dy * xhat)``, ``dL/dbeta = sum(dL/dy)``.
    In evaluation mode the statistics are constants and ``dL/dx = gh / sqrt(running_var + eps)``.
    ``xhat`` is not stored: each chunk recomputes ``x - mu`` while it is in cache.

    **ReLU fused.** When `Sequential` finds a ReLU right after this layer it sets ``relu`` for the
    call: forward then returns ``max(y, 0)`` in the same pass, and backward first multiplies dL/dy by
    ``[y > 0]`` (the ReLU's backward), chunk by chunk, saving two passes over the activations.

    Measured details (NumPy 2, chunks of 256 KB): column sums are matrix-vector products with a
    vector of ones (4x faster than ``.sum(axis=0)``); ``np.maximum(y, zeros)`` with a zero *array* is
    7x faster than with the scalar 0 (no SIMD loop for a broadcast operand).
    """

    fuses_relu = True  # Sequential may hand this layer the ReLU after it
    relu = False  # set by Sequential around a forward call when it does (see above)

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, seed: int | None = 0,
                 dtype=np.float32) -> None:
        super().__init__()
        self.num_features, self.momentum, self.eps = num_features, momentum, eps
        self.params["gamma"] = np.ones(num_features, dtype)
        self.params["beta"] = np.zeros(num_features, dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.buffers["running_mean"] = np.zeros(num_features, dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype)
        self.buf = _Buffers()

    def _items(self, x: np.ndarray) -> np.ndarray:
        """The input as ``(N, ..., C)``, channels last: chunks are slices of the first axis."""
        return nhwc(x) if x.ndim == 4 else x

    def _rows(self, a: np.ndarray, s: int, e: int) -> np.ndarray:
        """Items ``s:e`` of a channels-last array as ``(r, C)`` rows (a view when the memory allows)."""
        return a[s:e].reshape(-1, self.num_features)

    def _scratch(self, name: str, worker: int, r: int, dtype, fill: float | None = None) -> np.ndarray:
        """``r`` rows of the worker's scratch array ``name`` (room for the largest chunk)."""
        shape = (self.chunk_rows,) if name == "ones" else (self.chunk_rows, self.num_features)
        return self.buf.get(f"{name}{worker}", shape, dtype, fill)[:r]

    def _colsum(self, rows: np.ndarray, worker: int) -> np.ndarray:
        return self._scratch("ones", worker, rows.shape[0], rows.dtype, fill=1.0) @ rows

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if x.ndim not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm({self.num_features}) expects (N, {self.num_features}) or "
                             f"(N, {self.num_features}, H, W), got {x.shape}")
        c = self.num_features
        t = x.dtype.type
        items = self._items(x)
        m = x.size // c
        per_item = math.prod(x.shape[2:])  # values per channel in one item: H*W, or 1
        # a chunk touches three to five arrays of its size (input, output, scratch, gradient, mask):
        # half a CHUNK_BYTES each keeps them near the core's cache at a small Python cost per chunk
        self.chunks = _chunks(x.shape[0], 2 * per_item * c * x.itemsize)
        self.chunk_rows = (self.chunks[0][1] - self.chunks[0][0]) * per_item
        if training:
            if m < 2:
                raise ValueError("BatchNorm in training needs more than one value per channel (batch of 1?)")

            def moments(s: int, e: int, worker: int) -> tuple[int, np.ndarray, np.ndarray]:
                rows = self._rows(items, s, e)
                r = rows.shape[0]
                mean_k = self._colsum(rows, worker) * t(1 / r)
                sq = np.subtract(rows, mean_k, out=self._scratch("centred", worker, r, x.dtype))
                np.square(sq, out=sq)
                return r, mean_k, self._colsum(sq, worker)

            stats = parallel.map_spans(moments, self.chunks)
            counts = np.array([r for r, _, _ in stats], np.float64)[:, None]
            means = np.array([mu for _, mu, _ in stats], np.float64)
            mean64 = (counts * means).sum(axis=0) / m
            var64 = (np.array([m2 for _, _, m2 in stats], np.float64).sum(axis=0)
                     + (counts * (means - mean64) ** 2).sum(axis=0)) / m
            mean, var = mean64.astype(x.dtype), var64.astype(x.dtype)
            mom = t(self.momentum)
            self.buffers["running_mean"] *= 1 - mom
            self.buffers["running_mean"] += mom * mean
            self.buffers["running_var"] *= 1 - mom
            self.buffers["running_var"] += mom * var * t(m / (m - 1))
        else:
            mean, var = self.buffers["running_mean"].astype(x.dtype), self.buffers["running_var"].astype(x.dtype)
        inv_std = 1 / np.sqrt(var + t(self.eps))
        a = self.params["gamma"] * inv_std
        shift = self.params["beta"] - mean * a
        relu = self.relu
        out = _result(self, "y", items.shape, x.dtype)

        def apply(s: int, e: int, worker: int) -> None:
            o = self._rows(out, s, e)
            np.multiply(self._rows(items, s, e), a, out=o)
            o += shift
            if relu:
                np.maximum(o, self._scratch("zeros", worker, o.shape[0], x.dtype, fill=0.0), out=o)

        parallel.map_spans(apply, self.chunks)
        self.items, self.out, self.shape = items, out, x.shape
        self.mean, self.inv_std, self.training, self.fused_relu = mean, inv_std, training, relu
        return nchw(out) if x.ndim == 4 else out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        c = self.num_features
        t = dout.dtype.type
        g = self._items(dout)
        items, out, mean, inv_std = self.items, self.out, self.mean, self.inv_std
        m = dout.size // c
        dx = _result(self, "dx", items.shape, dout.dtype)

        def sums(s: int, e: int, worker: int) -> tuple[np.ndarray, np.ndarray]:
            """sum(gm) and sum(gm * (x - mu)) of the chunk, where gm is dL/dy after the ReLU's mask
            (kept in dx for the second pass)."""
            gm = self._rows(g, s, e)
            if self.fused_relu:
                gm = np.multiply(gm, self._rows(out, s, e) > 0, out=self._rows(dx, s, e))
            prod = np.subtract(self._rows(items, s, e), mean,
                               out=self._scratch("centred", worker, gm.shape[0], dout.dtype))
            prod *= gm
            return self._colsum(gm, worker), self._colsum(prod, worker)

        parts = parallel.map_spans(sums, self.chunks)
        self.grads["beta"][...] = _sum_in_order([p[0] for p in parts])
        self.grads["gamma"][...] = _sum_in_order([p[1] for p in parts]) * inv_std
        scale = self.params["gamma"] * inv_std
        # dL/dx = (gm - dbeta/m - xhat * dgamma/m) * scale, with xhat = (x - mu) * inv_std
        k_centred = inv_std * self.grads["gamma"] * t(-1 / m)
        k_const = self.grads["beta"] * t(1 / m)
        training = self.training

        def grad(s: int, e: int, worker: int) -> None:
            dxc = self._rows(dx, s, e)
            gm = dxc if self.fused_relu else self._rows(g, s, e)
            if training:
                tmp = np.subtract(self._rows(items, s, e), mean,
                                  out=self._scratch("centred", worker, dxc.shape[0], dout.dtype))
                tmp *= k_centred
                tmp += gm
                tmp -= k_const
                gm = tmp
            np.multiply(gm, scale, out=dxc)

        parallel.map_spans(grad, self.chunks)
        return nchw(dx) if dout.ndim == 4 else dx

    def spec(self) -> dict[str, Any]:
        return {"type": "BatchNorm", "num_features": self.num_features, "momentum": self.momentum, "eps": self.eps}
