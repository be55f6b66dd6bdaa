"""Convolution, pooling and batch normalisation: agreement with the naive float64 twins in
`digitlab.nn.reference`, with PyTorch (float32), float64 finite-difference gradient checks, and the
whole default CNN against its PyTorch mirror.

Only the public layer API is used (``forward``, ``backward``, ``params``, ``grads``, ``buffers``,
``spec``): the internals of `digitlab.nn.conv` (memory layout, buffers) are free to change. Inputs and
output gradients are fed in several memory layouts (NCHW-contiguous, channels-last, strided) and the
results must not depend on it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from digitlab.models import build, cnn_spec
from digitlab.nn import (
    AvgPool2D,
    BatchNorm,
    Conv2D,
    GlobalAvgPool,
    MaxPool2D,
    Sequential,
    SoftmaxCrossEntropy,
    build_layer,
    gradcheck,
)
from digitlab.nn import conv as conv_module
from digitlab.nn import reference as ref
from digitlab.torch import build_module, numpy_to_torch, torch_to_numpy

torch.set_num_threads(1)

TOL = 1e-6  # gradcheck relative error, float64
RTOL, ATOL = 1e-5, 1e-5  # against PyTorch / the float64 twins, float32 (ATOL scaled by magnitude)
FAST = settings(max_examples=30, deadline=None, database=None)

LAYOUTS = ("nchw", "channels_last", "strided")
seeds = st.integers(0, 2**32 - 1)
layouts = st.sampled_from(LAYOUTS)


# -- helpers ------------------------------------------------------------------------------------------
def in_layout(a: np.ndarray, layout: str) -> np.ndarray:
    """The same values as the 4-D array ``a`` in the requested memory layout."""
    if layout == "nchw":
        out = np.ascontiguousarray(a)
        assert out.flags.c_contiguous
    elif layout == "channels_last":
        out = np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        assert out.transpose(0, 2, 3, 1).flags.c_contiguous
    elif layout == "strided":  # neither layout: every other column of a wider array
        n, c, h, w = a.shape
        big = np.full((n, c, h, 2 * w), np.nan, a.dtype)
        big[..., ::2] = a
        out = big[..., ::2]
        assert out.strides[3] == 2 * a.itemsize
    else:  # pragma: no cover
        raise AssertionError(layout)
    np.testing.assert_array_equal(out, a)
    return out


def close(actual, expected, rtol=RTOL, atol=ATOL, err_msg=""):
    """``assert_allclose`` with ``atol`` scaled by the magnitude of ``expected`` (float32 sums)."""
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{err_msg}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=err_msg)


def t(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    out = torch.from_numpy(np.ascontiguousarray(a).copy())
    return out.requires_grad_(grad)


def out_size(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def no_tie_values(rng: np.random.Generator, shape, spacing: float = 0.1) -> np.ndarray:
    """Distinct values (a shuffled arange) so no max-pool window has a tie, even under +-h."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * spacing).reshape(shape)


# -- 1. Conv2D ----------------------------------------------------------------------------------------
@st.composite
def conv_cases(draw):
    case = dict(
        n=draw(st.integers(1, 3)), cin=draw(st.integers(1, 4)), cout=draw(st.integers(1, 4)),
        h=draw(st.integers(1, 9)), w=draw(st.integers(1, 9)),
        k=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        # stride 1 (often a separate code path) in about half of the cases
        s=draw(st.one_of(st.just((1, 1)), st.tuples(st.integers(1, 3), st.integers(1, 3)))),
        p=(draw(st.integers(0, 2)), draw(st.integers(0, 2))),
        bias=draw(st.booleans()), x_layout=draw(layouts), g_layout=draw(layouts), seed=draw(seeds),
    )
    assume(out_size(case["h"], case["k"][0], case["s"][0], case["p"][0]) >= 1)
    assume(out_size(case["w"], case["k"][1], case["s"][1], case["p"][1]) >= 1)
    return case


def make_conv(c):
    rng = np.random.default_rng(c["seed"])
    layer = Conv2D(c["cin"], c["cout"], kernel_size=c["k"], stride=c["s"], padding=c["p"], bias=c["bias"],
                   seed=int(rng.integers(1 << 31)))
    if c["bias"]:
        layer.params["b"][...] = rng.standard_normal(c["cout"])  # the default zeros would test nothing
    x = rng.standard_normal((c["n"], c["cin"], c["h"], c["w"])).astype(np.float32)
    return layer, x, rng


BIG_CONV_CASES = [  # always run, whatever hypothesis draws: the largest sizes, both stride paths
    dict(n=3, cin=4, cout=4, h=9, w=8, k=(3, 4), s=(2, 3), p=(2, 1), bias=True, x_layout="channels_last",
         g_layout="strided", seed=1),
    dict(n=3, cin=4, cout=3, h=9, w=9, k=(4, 3), s=(1, 1), p=(2, 2), bias=False, x_layout="strided",
         g_layout="channels_last", seed=2),
    dict(n=2, cin=3, cout=4, h=8, w=9, k=(3, 3), s=(1, 2), p=(1, 0), bias=True, x_layout="nchw",
         g_layout="nchw", seed=3),
    # stride 1, both ways to dW: from the input's columns (9x9 -> 7x7, many more input than output
    # pixels) and from the gradient's columns (9x9 -> 9x9 with padding)
    dict(n=3, cin=3, cout=4, h=9, w=9, k=(3, 3), s=(1, 1), p=(0, 0), bias=True, x_layout="channels_last",
         g_layout="channels_last", seed=4),
    dict(n=3, cin=4, cout=3, h=9, w=9, k=(1, 3), s=(1, 1), p=(0, 1), bias=True, x_layout="channels_last",
         g_layout="nchw", seed=5),
    # one input channel (its own transposed gather), strided and padded
    dict(n=3, cin=1, cout=4, h=9, w=8, k=(3, 2), s=(2, 1), p=(1, 1), bias=True, x_layout="nchw",
         g_layout="strided", seed=6),
]


def with_examples(cases):
    def deco(f):
        for case in reversed(cases):
            f = example(case)(f)
        return f
    return deco


@FAST
@given(conv_cases())
@with_examples(BIG_CONV_CASES)
def test_conv2d_matches_naive_twin_and_torch(c):
    layer, x, rng = make_conv(c)
    W = layer.params["W"].copy()
    b = layer.params["b"].copy() if c["bias"] else None
    assert W.shape == (c["cout"], c["cin"], *c["k"]) and W.dtype == np.float32
    oh, ow = out_size(c["h"], c["k"][0], c["s"][0], c["p"][0]), out_size(c["w"], c["k"][1], c["s"][1], c["p"][1])

    xin = in_layout(x, c["x_layout"])
    x_before = xin.copy()
    y = layer.forward(xin, training=True)
    assert y.shape == (c["n"], c["cout"], oh, ow) and y.dtype == np.float32
    G = rng.standard_normal(y.shape).astype(np.float32)
    gin = in_layout(G, c["g_layout"])
    dx = layer.backward(gin)
    np.testing.assert_array_equal(xin, x_before, err_msg="forward/backward modified its input")
    np.testing.assert_array_equal(gin, G, err_msg="backward modified dout")
    assert dx.shape == x.shape and dx.dtype == np.float32

    # naive float64 twin
    y_ref = ref.conv2d_forward(x, W, b, c["s"], c["p"])
    dx_ref, dW_ref, db_ref = ref.conv2d_backward(x, W, G, c["s"], c["p"])
    close(y, y_ref, err_msg="forward vs reference")
    close(dx, dx_ref, err_msg="dx vs reference")
    close(layer.grads["W"], dW_ref, err_msg="dW vs reference")
    if c["bias"]:
        close(layer.grads["b"], db_ref, err_msg="db vs reference")
    else:
        assert "b" not in layer.params and "b" not in layer.grads

    # PyTorch autograd
    xt, Wt = t(x, True), t(W, True)
    bt = t(b, True) if c["bias"] else None
    yt = F.conv2d(xt, Wt, bt, stride=c["s"], padding=c["p"])
    yt.backward(t(G))
    close(y, yt, err_msg="forward vs torch")
    close(dx, xt.grad, err_msg="dx vs torch")
    close(layer.grads["W"], Wt.grad, err_msg="dW vs torch")
    if c["bias"]:
        close(layer.grads["b"], bt.grad, err_msg="db vs torch")


@FAST
@given(conv_cases())
def test_conv2d_results_do_not_depend_on_layout(c):
    """The same values in every memory layout give the same outputs and gradients (up to rounding)."""
    layer, x, rng = make_conv(c)
    G = None
    results = []
    for x_layout, g_layout in [("nchw", "nchw"), (c["x_layout"], c["g_layout"]), ("channels_last", "strided")]:
        y = layer.forward(in_layout(x, x_layout), training=True).copy()
        if G is None:
            G = rng.standard_normal(y.shape).astype(np.float32)
        dx = layer.backward(in_layout(G, g_layout)).copy()
        results.append((y, dx, {k: v.copy() for k, v in layer.grads.items()}))
    y0, dx0, g0 = results[0]
    for y, dx, g in results[1:]:
        close(y, y0, rtol=1e-6, atol=1e-6)
        close(dx, dx0, rtol=1e-6, atol=1e-6)
        for k in g0:
            close(g[k], g0[k], rtol=1e-6, atol=1e-6)


def test_conv2d_reused_across_shapes_and_outputs_not_aliased():
    """One layer fed different shapes in turn (buffers must not go stale), and an earlier output or
    input gradient must not be overwritten by a later call."""
    rng = np.random.default_rng(0)
    layer = Conv2D(2, 3, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), seed=1)
    layer.params["b"][...] = rng.standard_normal(3)
    W, b = layer.params["W"].copy(), layer.params["b"].copy()
    # (1, 2, 5, 7) and (1, 2, 9, 3) have padded buffers of the same size but a different shape
    # and the last two calls have the same shape (so any reused output buffer would be overwritten)
    shapes = [(2, 2, 7, 5), (1, 2, 4, 9), (2, 2, 7, 5), (3, 2, 3, 3), (1, 2, 5, 7), (1, 2, 9, 3), (1, 2, 5, 7),
              (1, 2, 5, 7)]
    kept = []
    for i, shape in enumerate(shapes):
        x = rng.standard_normal(shape).astype(np.float32)
        y = layer.forward(in_layout(x, LAYOUTS[i % 3]), training=True)
        G = rng.standard_normal(y.shape).astype(np.float32)
        dx = layer.backward(G)
        close(y, ref.conv2d_forward(x, W, b, (2, 1), (1, 2)))
        dx_ref, dW_ref, _ = ref.conv2d_backward(x, W, G, (2, 1), (1, 2))
        close(dx, dx_ref)
        close(layer.grads["W"], dW_ref)
        kept.append((y, dx, ref.conv2d_forward(x, W, b, (2, 1), (1, 2)), dx_ref))
    for y, dx, y_ref, dx_ref in kept:
        close(y, y_ref, err_msg="an earlier output was overwritten by a later forward")
        close(dx, dx_ref, err_msg="an earlier input gradient was overwritten by a later backward")


@settings(max_examples=25, deadline=None, database=None)
@given(conv_cases())
@with_examples(BIG_CONV_CASES)
def test_conv2d_in_tiny_chunks(c):
    """With a minimal work-chunk size (if the implementation splits the batch into chunks, one image
    per chunk) the results are unchanged: chunk boundaries are invisible."""
    layer, x, rng = make_conv(c)
    W, b = layer.params["W"].copy(), layer.params["b"].copy() if c["bias"] else None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conv_module, "CHUNK_BYTES", 1, raising=False)
        y = layer.forward(in_layout(x, c["x_layout"]), training=True)
        G = rng.standard_normal(y.shape).astype(np.float32)
        dx = layer.backward(in_layout(G, c["g_layout"]))
    dx_ref, dW_ref, db_ref = ref.conv2d_backward(x, W, G, c["s"], c["p"])
    close(y, ref.conv2d_forward(x, W, b, c["s"], c["p"]))
    close(dx, dx_ref)
    close(layer.grads["W"], dW_ref)
    if c["bias"]:
        close(layer.grads["b"], db_ref)


def test_conv2d_backward_uses_latest_forward_and_grads_are_overwritten():
    rng = np.random.default_rng(1)
    layer = Conv2D(2, 2, kernel_size=2, padding=1, seed=3)
    x1, x2 = (rng.standard_normal((2, 2, 4, 4)).astype(np.float32) for _ in range(2))
    G = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    layer.forward(x1, training=True)
    layer.backward(G)
    layer.forward(x2, training=True)
    layer.backward(G)  # grads are overwritten, not accumulated
    _, dW_ref, db_ref = ref.conv2d_backward(x2, layer.params["W"], G, (1, 1), (1, 1))
    close(layer.grads["W"], dW_ref)
    close(layer.grads["b"], db_ref)


def test_conv2d_without_input_grad_still_computes_param_grads():
    rng = np.random.default_rng(2)
    layer = Conv2D(3, 2, kernel_size=3, stride=2, padding=1, seed=4)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    y = layer.forward(x, training=True)
    G = rng.standard_normal(y.shape).astype(np.float32)
    layer.need_input_grad = False
    try:
        assert layer.backward(G) is None
    finally:
        layer.need_input_grad = True
    _, dW_ref, db_ref = ref.conv2d_backward(x, layer.params["W"], G, (2, 2), (1, 1))
    close(layer.grads["W"], dW_ref)
    close(layer.grads["b"], db_ref)


def test_conv2d_spec_round_trip_and_torch_twin():
    layer = Conv2D(3, 4, kernel_size=(3, 1), stride=(1, 2), padding=(2, 0), bias=False, init="xavier", seed=5)
    spec = layer.spec()
    assert spec == {"type": "Conv2D", "in_channels": 3, "out_channels": 4, "kernel_size": [3, 1],
                    "stride": [1, 2], "padding": [2, 0], "bias": False, "init": "xavier"}
    again = build_layer(spec, seed=5)
    assert isinstance(again, Conv2D) and again.spec() == spec
    np.testing.assert_array_equal(again.params["W"], layer.params["W"])
    mod = build_module({"layers": [spec]})[0]
    assert isinstance(mod, torch.nn.Conv2d) and mod.bias is None
    assert (mod.kernel_size, mod.stride, mod.padding) == ((3, 1), (1, 2), (2, 0))
    assert tuple(mod.weight.shape) == layer.params["W"].shape


# -- 2. MaxPool2D -------------------------------------------------------------------------------------
@st.composite
def pool_cases(draw, max_k: int = 3):
    k = (draw(st.integers(1, max_k)), draw(st.integers(1, max_k)))
    case = dict(
        n=draw(st.integers(1, 3)), c=draw(st.integers(1, 4)), h=draw(st.integers(1, 9)), w=draw(st.integers(1, 9)),
        k=k, s=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        p=(draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2))),
        x_layout=draw(layouts), g_layout=draw(layouts), seed=draw(seeds),
    )
    assume(out_size(case["h"], case["k"][0], case["s"][0], case["p"][0]) >= 1)
    assume(out_size(case["w"], case["k"][1], case["s"][1], case["p"][1]) >= 1)
    return case


def pool_io(c):
    return (c["n"], c["c"], c["h"], c["w"]), (c["n"], c["c"], out_size(c["h"], c["k"][0], c["s"][0], c["p"][0]),
                                               out_size(c["w"], c["k"][1], c["s"][1], c["p"][1]))


def run_layer(layer, x, G, c, training=True):
    xin, gin = in_layout(x, c["x_layout"]), in_layout(G, c["g_layout"])
    x_before = xin.copy()
    y = layer.forward(xin, training=training)
    dx = layer.backward(gin)
    np.testing.assert_array_equal(xin, x_before, err_msg="the layer modified its input")
    np.testing.assert_array_equal(gin, G, err_msg="backward modified dout")
    assert y.dtype == x.dtype and dx.dtype == x.dtype
    return y, dx


@FAST
@given(pool_cases())
def test_maxpool2d_matches_naive_twin_and_torch(c):
    rng = np.random.default_rng(c["seed"])
    in_shape, out_shape = pool_io(c)
    x = rng.standard_normal(in_shape).astype(np.float32)
    G = rng.standard_normal(out_shape).astype(np.float32)
    layer = MaxPool2D(c["k"], c["s"], c["p"])
    y, dx = run_layer(layer, x, G, c)
    assert y.shape == out_shape and dx.shape == in_shape

    y_ref, arg = ref.maxpool2d_forward(x, c["k"], c["s"], c["p"])
    np.testing.assert_array_equal(y, y_ref.astype(np.float32))
    close(dx, ref.maxpool2d_backward(x.shape, arg, G, c["p"]))

    xt = t(x, True)
    yt = F.max_pool2d(xt, c["k"], c["s"], c["p"])
    yt.backward(t(G))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    close(dx, xt.grad)


tie_inputs = st.sampled_from(["binary", "constant", "few_levels"])


def tied_input(rng, shape, kind):
    if kind == "binary":
        return rng.integers(0, 2, shape).astype(np.float32)
    if kind == "constant":
        return np.full(shape, rng.choice([-1.5, 0.0, 2.0]), np.float32)
    return rng.integers(-1, 2, shape).astype(np.float32)  # {-1, 0, 1}


@settings(max_examples=40, deadline=None, database=None)
@given(pool_cases(), tie_inputs)
def test_maxpool2d_ties_go_to_first_max_exactly_as_torch(c, kind):
    """With many ties each window's gradient goes to its first maximum in row-major order, as in
    PyTorch. Integer-valued gradients make every sum exact, so the comparison is exact."""
    rng = np.random.default_rng(c["seed"])
    in_shape, out_shape = pool_io(c)
    x = tied_input(rng, in_shape, kind)
    G = rng.integers(-4, 5, out_shape).astype(np.float32)
    y, dx = run_layer(MaxPool2D(c["k"], c["s"], c["p"]), x, G, c)

    xt = t(x, True)
    yt = F.max_pool2d(xt, c["k"], c["s"], c["p"])
    yt.backward(t(G))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(dx, xt.grad.numpy())

    y_ref, arg = ref.maxpool2d_forward(x, c["k"], c["s"], c["p"])
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, ref.maxpool2d_backward(x.shape, arg, G, c["p"]))


@settings(max_examples=40, deadline=None, database=None)
@given(pool_cases(), st.sampled_from(["binary", "constant", "few_levels", "random"]))
def test_maxpool2d_exactly_one_recipient_per_window(c, kind):
    rng = np.random.default_rng(c["seed"])
    in_shape, out_shape = pool_io(c)
    x = tied_input(rng, in_shape, kind) if kind != "random" else rng.standard_normal(in_shape).astype(np.float32)
    layer = MaxPool2D(c["k"], c["s"], c["p"])

    # dout = 1 everywhere: every window hands out exactly 1, so dx counts recipients
    ones = np.ones(out_shape, np.float32)
    y, dx = run_layer(layer, x, ones, c)
    assert np.all(dx >= 0) and np.all(dx == np.round(dx)), "each window must give its gradient to one element"
    assert dx.sum() == ones.size, f"gradient mass {dx.sum()} != number of windows {ones.size}"
    # per (n, c) plane as well: windows never hand gradient across channels or samples
    np.testing.assert_array_equal(dx.sum(axis=(2, 3)), np.full(in_shape[:2], out_shape[2] * out_shape[3]))
    # each recipient holds its window's maximum
    assert np.all(np.isin(y, x)), "a max-pool output is not one of the inputs"

    G = rng.integers(-4, 5, out_shape).astype(np.float32)
    _, dx = run_layer(layer, x, G, c)
    assert dx.sum() == G.sum()
    np.testing.assert_array_equal(dx.sum(axis=(2, 3)), G.sum(axis=(2, 3)))


def test_maxpool2d_known_example():
    x = np.array([[[[1, 3, 3, 0],
                    [2, 3, 1, 1],
                    [0, 0, 5, 5],
                    [4, 0, 5, 2]]]], np.float32)
    layer = MaxPool2D(2, 2)
    y = layer.forward(x, training=True)
    np.testing.assert_array_equal(y, [[[[3, 3], [4, 5]]]])
    dx = layer.backward(np.array([[[[1, 2], [3, 4]]]], np.float32))
    np.testing.assert_array_equal(dx, [[[[0, 1, 2, 0],
                                         [0, 0, 0, 0],
                                         [0, 0, 4, 0],
                                         [3, 0, 0, 0]]]])


# -- 3. AvgPool2D -------------------------------------------------------------------------------------
@FAST
@given(pool_cases())
def test_avgpool2d_matches_torch(c):
    rng = np.random.default_rng(c["seed"])
    in_shape, out_shape = pool_io(c)
    x = rng.standard_normal(in_shape).astype(np.float32)
    G = rng.standard_normal(out_shape).astype(np.float32)
    y, dx = run_layer(AvgPool2D(c["k"], c["s"], c["p"]), x, G, c)

    xt = t(x, True)
    yt = F.avg_pool2d(xt, c["k"], c["s"], c["p"])  # count_include_pad=True
    yt.backward(t(G))
    close(y, yt)
    close(dx, xt.grad)
    # the zero padding counts in the denominator: the total gradient mass is sum(G) * (in-image share)
    if c["p"] == (0, 0):
        close(dx.sum(), G.sum(), atol=1e-4)


def test_avgpool2d_counts_padding():
    x = np.ones((1, 1, 2, 2), np.float32)
    y = AvgPool2D(2, 2, 1).forward(x)
    np.testing.assert_allclose(y, np.full((1, 1, 2, 2), 0.25))


def test_pool_spec_and_defaults():
    mp = MaxPool2D(3)
    assert mp.spec() == {"type": "MaxPool2D", "kernel_size": [3, 3], "stride": [3, 3], "padding": [0, 0]}
    ap = build_layer(AvgPool2D((2, 3), (1, 2), (1, 1)).spec())
    assert isinstance(ap, AvgPool2D)
    assert ap.spec() == {"type": "AvgPool2D", "kernel_size": [2, 3], "stride": [1, 2], "padding": [1, 1]}
    with pytest.raises(ValueError, match="padding"):
        MaxPool2D(2, 1, 2)
    with pytest.raises(ValueError, match="padding"):
        AvgPool2D((3, 2), 1, (1, 2))


# -- 4. GlobalAvgPool ---------------------------------------------------------------------------------
@FAST
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), layouts, layouts, seeds)
def test_global_avg_pool_matches_mean(n, ch, h, w, x_layout, g_layout, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, ch, h, w)).astype(np.float32)
    G = rng.standard_normal((n, ch)).astype(np.float32)
    layer = GlobalAvgPool()
    x_before = x.copy()
    y = layer.forward(in_layout(x, x_layout), training=True)
    assert y.shape == (n, ch)
    dx = layer.backward(G.copy())
    np.testing.assert_array_equal(x, x_before)
    assert dx.shape == x.shape and dx.dtype == np.float32
    close(y, x.astype(np.float64).mean((2, 3)))
    close(dx, np.broadcast_to(G[:, :, None, None] / (h * w), x.shape))
    xt = t(x, True)
    yt = xt.mean((2, 3))
    yt.backward(t(G))
    close(y, yt)
    close(dx, xt.grad)
    assert layer.spec() == {"type": "GlobalAvgPool"}


# -- 5. BatchNorm -------------------------------------------------------------------------------------
@st.composite
def bn_cases(draw):
    four_d = draw(st.booleans())
    n, ch = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    shape = (n, ch, draw(st.integers(1, 5)), draw(st.integers(1, 5))) if four_d else (n, ch)
    m = n * (shape[2] * shape[3] if four_d else 1)
    assume(m >= 4)  # over 2 or 3 values BatchNorm's dx is a difference of near-equal terms (ill-conditioned)
    return dict(shape=shape, layout=draw(layouts) if four_d else None, g_layout=draw(layouts) if four_d else None,
                seed=draw(seeds))


def bn_layout(a, layout):
    return a.copy() if layout is None else in_layout(a, layout)


def bn_inputs(rng, shape, calls=3):
    ch = shape[1]
    view = (1, ch) + (1,) * (len(shape) - 2)
    # per-channel offsets and scales, so mean/var differ across channels
    offset = rng.uniform(-2, 2, ch).reshape(view)
    scale = rng.uniform(0.5, 3, ch).reshape(view)
    return [(offset + scale * rng.standard_normal(shape)).astype(np.float32) for _ in range(calls)]


@FAST
@given(bn_cases())
def test_batchnorm_training_and_eval_match_torch(c):
    rng = np.random.default_rng(c["seed"])
    shape, ch = c["shape"], c["shape"][1]
    layer = BatchNorm(ch, momentum=0.1, eps=1e-5)
    assert set(layer.params) == {"gamma", "beta"} and set(layer.grads) == {"gamma", "beta"}
    assert set(layer.buffers) == {"running_mean", "running_var"}
    np.testing.assert_array_equal(layer.buffers["running_mean"], np.zeros(ch))
    np.testing.assert_array_equal(layer.buffers["running_var"], np.ones(ch))
    layer.params["gamma"][...] = rng.uniform(0.5, 2, ch)
    layer.params["beta"][...] = rng.standard_normal(ch)
    gamma, beta = layer.params["gamma"].copy(), layer.params["beta"].copy()
    rm, rv = torch.zeros(ch), torch.ones(ch)

    # three training steps: output, gradients and running statistics after each
    for x in bn_inputs(rng, shape):
        G = rng.standard_normal(shape).astype(np.float32)
        xin, gin = bn_layout(x, c["layout"]), bn_layout(G, c["g_layout"])
        y = layer.forward(xin, training=True)
        dx = layer.backward(gin)
        np.testing.assert_array_equal(xin, x)
        np.testing.assert_array_equal(gin, G)
        xt, gt, bt = t(x, True), t(gamma, True), t(beta, True)
        yt = F.batch_norm(xt, rm, rv, gt, bt, training=True, momentum=0.1, eps=1e-5)
        yt.backward(t(G))
        close(y, yt, err_msg="train output")
        close(dx, xt.grad, err_msg="train dx")
        close(layer.grads["gamma"], gt.grad, err_msg="train dgamma")
        close(layer.grads["beta"], bt.grad, err_msg="train dbeta")
        close(layer.buffers["running_mean"], rm, err_msg="running_mean")
        close(layer.buffers["running_var"], rv, err_msg="running_var (unbiased)")
    assert not np.allclose(layer.buffers["running_var"], 1.0)

    # evaluation: running statistics, which must not move
    rm_before, rv_before = layer.buffers["running_mean"].copy(), layer.buffers["running_var"].copy()
    x = bn_inputs(rng, shape, 1)[0]
    G = rng.standard_normal(shape).astype(np.float32)
    y = layer.forward(bn_layout(x, c["layout"]), training=False)
    dx = layer.backward(bn_layout(G, c["g_layout"]))
    np.testing.assert_array_equal(layer.buffers["running_mean"], rm_before)
    np.testing.assert_array_equal(layer.buffers["running_var"], rv_before)
    xt, gt, bt = t(x, True), t(gamma, True), t(beta, True)
    yt = F.batch_norm(xt, rm, rv, gt, bt, training=False, momentum=0.1, eps=1e-5)
    yt.backward(t(G))
    close(y, yt, err_msg="eval output")
    close(dx, xt.grad, err_msg="eval dx")
    close(layer.grads["gamma"], gt.grad, err_msg="eval dgamma")
    close(layer.grads["beta"], bt.grad, err_msg="eval dbeta")


def test_batchnorm_running_var_is_unbiased():
    """A direct check with known numbers: one step from (0, 1) with momentum 0.5."""
    x = np.array([[1.0], [3.0]], np.float32)  # mean 2, biased var 1, unbiased var 2
    layer = BatchNorm(1, momentum=0.5)
    y = layer.forward(x, training=True)
    np.testing.assert_allclose(y[:, 0], [-1 / np.sqrt(1 + 1e-5), 1 / np.sqrt(1 + 1e-5)], rtol=1e-6)
    np.testing.assert_allclose(layer.buffers["running_mean"], [1.0])
    np.testing.assert_allclose(layer.buffers["running_var"], [0.5 * 1 + 0.5 * 2])
    assert layer.spec() == {"type": "BatchNorm", "num_features": 1, "momentum": 0.5, "eps": 1e-5}


def test_batchnorm_errors():
    layer = BatchNorm(3)
    with pytest.raises(ValueError, match=re.escape("(N, 3)")):
        layer.forward(np.zeros((2, 4), np.float32), training=True)
    with pytest.raises(ValueError, match=re.escape("(N, 3, H, W)")):
        layer.forward(np.zeros((2, 2, 3, 3), np.float32), training=True)
    with pytest.raises(ValueError, match="more than one value"):
        layer.forward(np.zeros((1, 3), np.float32), training=True)
    # a batch of one is fine in evaluation
    assert layer.forward(np.zeros((1, 3), np.float32), training=False).shape == (1, 3)


# -- 6. float64 gradient checks -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "cin, cout, k, s, p, bias, shape",
    [
        (1, 2, 3, 1, 0, True, (2, 1, 5, 5)),
        (2, 3, 3, 2, 1, True, (2, 2, 6, 5)),
        (3, 2, (2, 3), (2, 1), (0, 2), False, (1, 3, 5, 4)),
        (2, 2, 1, 3, 2, True, (3, 2, 4, 4)),
    ],
)
def test_conv2d_gradcheck(cin, cout, k, s, p, bias, shape):
    layer = Conv2D(cin, cout, kernel_size=k, stride=s, padding=p, bias=bias, seed=7)
    rng = np.random.default_rng(8)
    if bias:
        layer.params["b"][...] = rng.standard_normal(cout)
    errors = gradcheck(layer, rng.standard_normal(shape), max_checks=None)
    assert set(errors) == {"input", "W", *(["b"] if bias else [])}
    assert layer.params["W"].dtype == np.float64
    for name, err in errors.items():
        assert err < TOL, (name, err)


@pytest.mark.parametrize("k, s, p, shape", [(2, 2, 0, (2, 2, 4, 4)), (3, 1, 1, (1, 2, 5, 4)),
                                            ((3, 2), (2, 1), (1, 0), (2, 1, 6, 5)), (2, 2, 1, (1, 2, 5, 5))])
@pytest.mark.parametrize("pool", [MaxPool2D, AvgPool2D])
def test_pool_gradcheck(pool, k, s, p, shape):
    x = no_tie_values(np.random.default_rng(9), shape)
    errors = gradcheck(pool(k, s, p), x, max_checks=None)
    assert set(errors) == {"input"} and errors["input"] < TOL, errors


def test_global_avg_pool_gradcheck():
    errors = gradcheck(GlobalAvgPool(), np.random.default_rng(10).standard_normal((2, 3, 4, 5)), max_checks=None)
    assert errors["input"] < TOL, errors


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 3, 2)])
def test_batchnorm_gradcheck(shape, training):
    rng = np.random.default_rng(11)
    ch = shape[1]
    layer = BatchNorm(ch)
    layer.params["gamma"][...] = rng.uniform(0.5, 2, ch)
    layer.params["beta"][...] = rng.standard_normal(ch)
    layer.buffers["running_mean"][...] = rng.standard_normal(ch)
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2, ch)
    errors = gradcheck(layer, rng.standard_normal(shape) * 2 + 1, training=training, max_checks=None)
    assert set(errors) == {"input", "gamma", "beta"}
    assert layer.buffers["running_var"].dtype == np.float64
    for name, err in errors.items():
        assert err < TOL, (name, err)


def test_small_conv_net_gradcheck():
    """Conv -> BatchNorm -> Tanh -> MaxPool -> Conv -> AvgPool -> GlobalAvgPool through `Sequential`."""
    layers = [Conv2D(1, 2, 3, padding=1, bias=False, seed=1), BatchNorm(2), build_layer({"type": "Tanh"}),
              MaxPool2D(2, 1), Conv2D(2, 3, 2, stride=2, seed=2), AvgPool2D(2, 1, 1), GlobalAvgPool()]
    net = Sequential(layers, input_shape=(1, 6, 6), classes=["a", "b", "c"])
    x = np.random.default_rng(12).standard_normal((3, 1, 6, 6))
    errors = gradcheck(net, x, SoftmaxCrossEntropy(), np.array([0, 2, 1]), training=True, max_checks=None)
    assert set(errors) == {"input", "0.W", "1.gamma", "1.beta", "4.W", "4.b"}  # a bias before BN has no gradient
    for name, err in errors.items():
        assert err < TOL, (name, err)


# -- 7. the default CNN against its PyTorch mirror ----------------------------------------------------
TORCH_NAME = {("Dense", "W"): ("weight", True), ("Dense", "b"): ("bias", False),
              ("Conv2D", "W"): ("weight", False), ("Conv2D", "b"): ("bias", False),
              ("BatchNorm", "gamma"): ("bn.weight", False), ("BatchNorm", "beta"): ("bn.bias", False)}


def mirrored_cnn(dropout: float, seed: int = 0):
    spec = cnn_spec(dropout=dropout)
    model = build(spec, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for layer in model.layers:  # non-trivial BatchNorm parameters and statistics, so a mix-up shows
        if isinstance(layer, BatchNorm):
            ch = layer.num_features
            layer.params["gamma"][...] = rng.uniform(0.5, 1.5, ch)
            layer.params["beta"][...] = rng.normal(0, 0.2, ch)
            layer.buffers["running_mean"][...] = rng.normal(0, 0.3, ch)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2, ch)
        elif "b" in layer.params:
            layer.params["b"][...] = rng.normal(0, 0.1, layer.params["b"].shape)
    module = numpy_to_torch(model, build_module(spec))
    return spec, model, module


def torch_grads(model, module):
    """``{numpy name: torch gradient in NumPy layout}`` matched through the layer order."""
    named = dict(module.named_parameters())
    out = {}
    assert len(model.layers) == len(module)
    for i, layer in enumerate(model.layers):
        for name in layer.params:
            path, transpose = TORCH_NAME[(type(layer).__name__, name)]
            g = named[f"{i}.{path}"].grad.numpy()
            out[f"{i}.{name}"] = g.T if transpose else g
    assert len(out) == len(named)
    return out


@pytest.mark.parametrize("training", [False, True])
def test_default_cnn_matches_torch(training):
    spec, model, module = mirrored_cnn(dropout=0.0 if training else 0.3)
    kinds = [layer["type"] for layer in spec["layers"]]
    assert kinds.count("Conv2D") == 4 and kinds.count("MaxPool2D") == 2
    assert ("Dropout" in kinds) is (not training)
    module.train(training)
    rng = np.random.default_rng(13)
    # 8 images, not 4: the head's BatchNorm normalises over the batch alone, and over 4 values its
    # input gradient is a difference of near-equal terms, which turns the float32 rounding differences
    # of the conv stack (~1e-6) into 1e-3 relative differences in single weight gradients
    x = rng.random((8, 1, 28, 28), dtype=np.float32)
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6])

    logits = model.forward(x, training=training)
    loss = SoftmaxCrossEntropy()
    loss_value = loss.forward(logits, labels)
    dx = model.backward(loss.backward())

    xt = t(x, True)
    logits_t = module(xt)
    loss_t = F.cross_entropy(logits_t, torch.from_numpy(labels))
    loss_t.backward()

    assert logits.shape == (8, 10)
    np.testing.assert_allclose(logits, logits_t.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert loss_value == pytest.approx(loss_t.item(), rel=1e-5)
    ours, theirs = model.named_grads(), torch_grads(model, module)
    assert set(ours) == set(theirs) and len(ours) == 4 + 5 * 2 + 1 + 2
    for name in ours:
        close(ours[name], theirs[name], rtol=1e-4, atol=1e-5, err_msg=name)
    close(dx, xt.grad, rtol=1e-4, atol=1e-5, err_msg="input gradient")

    # running statistics: moved the same way by one training forward, untouched in evaluation
    for i, layer in enumerate(model.layers):
        if isinstance(layer, BatchNorm):
            close(layer.buffers["running_mean"], module[i].bn.running_mean, rtol=1e-4, err_msg=f"{i}.running_mean")
            close(layer.buffers["running_var"], module[i].bn.running_var, rtol=1e-4, err_msg=f"{i}.running_var")

    # the training path skips the first layer's input gradient: same parameter gradients
    for g in model.named_grads().values():
        g[...] = np.nan
    loss.forward(model.forward(x, training=training), labels)
    assert model.backward(loss.backward(), input_grad=False) is None
    for name, g in model.named_grads().items():
        close(g, theirs[name], rtol=1e-4, atol=1e-5, err_msg=f"{name} (input_grad=False)")


def test_torch_to_numpy_round_trip_is_exact():
    spec, model, module = mirrored_cnn(dropout=0.3)
    saved = model.state_dict()
    other = build(spec, seed=1)  # different weights, same architecture
    assert any(not np.array_equal(v, saved[k]) for k, v in other.state_dict().items())
    torch_to_numpy(module, other)
    restored = other.state_dict()
    assert set(restored) == set(saved)
    for k in saved:
        assert restored[k].dtype == saved[k].dtype
        np.testing.assert_array_equal(restored[k], saved[k], err_msg=k)
    # and back again: torch -> numpy -> a fresh torch module gives identical tensors
    again = numpy_to_torch(other, build_module(spec))
    for (name, a), (_, b) in zip(module.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


# -- 8. clear errors ----------------------------------------------------------------------------------
def test_conv2d_wrong_channel_count_names_expected_shape():
    layer = Conv2D(3, 4, kernel_size=3)
    with pytest.raises(ValueError, match=re.escape("(N, 3, H, W)")) as info:
        layer.forward(np.zeros((2, 1, 8, 8), np.float32))
    assert "(2, 1, 8, 8)" in str(info.value)
    with pytest.raises(ValueError, match=re.escape("(N, 3, H, W)")):
        layer.forward(np.zeros((2, 3, 8), np.float32))


def test_conv2d_input_smaller_than_kernel():
    layer = Conv2D(1, 2, kernel_size=(5, 3))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        layer.forward(np.zeros((1, 1, 4, 9), np.float32))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        layer.forward(np.zeros((1, 1, 9, 2), np.float32))
    # padding can make it fit: the boundary case gives a 1x1 output, no error
    assert Conv2D(1, 2, kernel_size=5, padding=1).forward(np.zeros((1, 1, 3, 3), np.float32)).shape == (1, 2, 1, 1)
    assert layer.forward(np.zeros((1, 1, 5, 3), np.float32)).shape == (1, 2, 1, 1)


@pytest.mark.parametrize("pool", [MaxPool2D, AvgPool2D, GlobalAvgPool])
def test_pools_reject_bad_inputs(pool):
    layer = pool() if pool is GlobalAvgPool else pool(3)
    with pytest.raises(ValueError, match=re.escape("(N, C, H, W)")):
        layer.forward(np.zeros((2, 9), np.float32))
    if pool is not GlobalAvgPool:
        with pytest.raises(ValueError, match=f"{pool.__name__}.*smaller than the window"):
            layer.forward(np.zeros((1, 1, 2, 5), np.float32))
