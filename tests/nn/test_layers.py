"""Layers and losses: finite-difference gradient checks (float64) and agreement with PyTorch (float32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from digitlab.nn import (
    MSE,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    ReLU,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    gradcheck,
)

torch.set_num_threads(1)

TOL = 1e-6  # gradcheck relative error, float64
RTOL, ATOL = 1e-5, 1e-6  # against PyTorch, float32
FAST = settings(max_examples=25, deadline=None, database=None)


def away_from_zero(rng: np.random.Generator, shape, low: float = 0.05, high: float = 2.0) -> np.ndarray:
    """Values with |x| in [low, high]: finite differences never straddle the kink of (Leaky)ReLU."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, high, size=shape)


def assert_close(actual, expected, rtol=RTOL, atol=ATOL):
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol)


def assert_gradcheck(errors: dict[str, float], expected_keys: set[str]) -> None:
    assert set(errors) == expected_keys
    for name, err in errors.items():
        assert err < TOL, f"{name}: relative error {err:.3g}"


# -- gradient checks (float64) ---------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("init", ["he", "xavier", "lecun"])
def test_dense_gradcheck(bias, init):
    rng = np.random.default_rng(1)
    layer = Dense(5, 3, bias=bias, init=init, seed=2)
    if bias:
        layer.params["b"][...] = rng.standard_normal(3)  # a non-zero bias exercises the forward too
    errors = gradcheck(layer, rng.standard_normal((4, 5)), max_checks=None)
    assert_gradcheck(errors, {"input", "W", "b"} if bias else {"input", "W"})


@pytest.mark.parametrize("make", [ReLU, lambda: LeakyReLU(0.1), LeakyReLU, Sigmoid, Tanh],
                         ids=["relu", "leaky0.1", "leaky", "sigmoid", "tanh"])
def test_activation_gradcheck(make):
    x = away_from_zero(np.random.default_rng(3), (4, 6))
    assert_gradcheck(gradcheck(make(), x, max_checks=None), {"input"})


def test_flatten_gradcheck():
    x = np.random.default_rng(4).standard_normal((3, 2, 3, 4))
    assert_gradcheck(gradcheck(Flatten(), x, max_checks=None), {"input"})


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_gradcheck_with_fixed_mask(p):
    layer = Dropout(p, seed=0)
    x = np.random.default_rng(5).standard_normal((6, 7))
    errors = gradcheck(layer, x, training=True, max_checks=None, before_forward=lambda: layer.reseed(11))
    assert_gradcheck(errors, {"input"})
    layer.reseed(11)
    out = layer.forward(x, training=True)
    assert 0 < np.count_nonzero(out) < out.size  # the check really ran through a mask


def test_softmax_cross_entropy_gradcheck():
    rng = np.random.default_rng(6)
    logits = 3 * rng.standard_normal((5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    errors = gradcheck(Flatten(), logits, loss=SoftmaxCrossEntropy(), target=labels, max_checks=None)
    assert_gradcheck(errors, {"input"})


def test_mse_gradcheck_float_and_integer_targets():
    rng = np.random.default_rng(7)
    pred = rng.standard_normal((5, 3))
    errors = gradcheck(Flatten(), pred, loss=MSE(), target=rng.standard_normal((5, 3)), max_checks=None)
    assert_gradcheck(errors, {"input"})
    errors = gradcheck(Flatten(), pred, loss=MSE(), target=np.array([0, 2, 1, 0, 2]), max_checks=None)
    assert_gradcheck(errors, {"input"})


def test_dense_then_loss_gradcheck_checks_parameters():
    rng = np.random.default_rng(8)
    layer = Dense(6, 4, seed=3)
    errors = gradcheck(layer, rng.standard_normal((5, 6)), loss=SoftmaxCrossEntropy(),
                       target=np.array([3, 0, 1, 2, 3]), max_checks=None)
    assert_gradcheck(errors, {"input", "W", "b"})


def test_gradcheck_detects_a_wrong_backward():
    """The checker itself can fail: a layer whose backward is off by a factor is caught."""

    class BadTanh(Tanh):
        def backward(self, dout):
            return 1.01 * super().backward(dout)

    x = np.random.default_rng(9).standard_normal((3, 4))
    errors = gradcheck(BadTanh(), x, max_checks=None)
    assert errors["input"] > 1e-3


# -- agreement with PyTorch (float32) --------------------------------------------------------------

def t32(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(np.asarray(a, np.float32), requires_grad=grad)


@FAST
@given(n=st.integers(1, 6), d_in=st.integers(1, 8), d_out=st.integers(1, 8), bias=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_dense_matches_torch(n, d_in, d_out, bias, seed):
    rng = np.random.default_rng(seed)
    layer = Dense(d_in, d_out, bias=bias, seed=seed)
    if bias:
        layer.params["b"][...] = rng.standard_normal(d_out).astype(np.float32)
    x = rng.standard_normal((n, d_in)).astype(np.float32)
    g = rng.standard_normal((n, d_out)).astype(np.float32)

    out = layer.forward(x, training=True)
    dx = layer.backward(g)
    assert out.dtype == np.float32 and dx.dtype == np.float32

    xt, wt = t32(x, True), t32(layer.params["W"].T, True)
    bt = t32(layer.params["b"], True) if bias else None
    ref = F.linear(xt, wt, bt)
    ref.backward(t32(g))
    assert_close(out, ref)
    assert_close(dx, xt.grad)
    assert_close(layer.grads["W"], wt.grad.T)
    if bias:
        assert_close(layer.grads["b"], bt.grad)


def _activation_case(rng, n, d):
    x = rng.uniform(-4, 4, size=(n, d)).astype(np.float32)
    x.reshape(-1)[:: 3] = 0.0  # exact zeros: the sub-gradient convention must match PyTorch's
    return x, rng.standard_normal((n, d)).astype(np.float32)


@FAST
@given(n=st.integers(1, 5), d=st.integers(1, 9), seed=st.integers(0, 2**31 - 1),
       kind=st.sampled_from(["relu", "sigmoid", "tanh"]))
def test_activations_match_torch(n, d, seed, kind):
    layer, ref_fn = {"relu": (ReLU(), F.relu), "sigmoid": (Sigmoid(), torch.sigmoid),
                     "tanh": (Tanh(), torch.tanh)}[kind]
    x, g = _activation_case(np.random.default_rng(seed), n, d)
    out = layer.forward(x, training=True)
    dx = layer.backward(g)
    xt = t32(x, True)
    ref = ref_fn(xt)
    ref.backward(t32(g))
    assert_close(out, ref)
    assert_close(dx, xt.grad)


@FAST
@given(n=st.integers(1, 5), d=st.integers(1, 9), seed=st.integers(0, 2**31 - 1),
       alpha=st.floats(0.0, 0.5))
def test_leaky_relu_matches_torch(n, d, seed, alpha):
    x, g = _activation_case(np.random.default_rng(seed), n, d)
    layer = LeakyReLU(alpha)
    out = layer.forward(x, training=True)
    dx = layer.backward(g)
    xt = t32(x, True)
    ref = F.leaky_relu(xt, negative_slope=alpha)
    ref.backward(t32(g))
    assert_close(out, ref)
    assert_close(dx, xt.grad)


@FAST
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4), seed=st.integers(0, 2**31 - 1))
def test_flatten_matches_torch(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    layer = Flatten()
    out = layer.forward(x)
    ref = torch.flatten(t32(x), start_dim=1)
    assert out.shape == tuple(ref.shape)
    assert np.array_equal(out, ref.numpy())
    g = rng.standard_normal(out.shape).astype(np.float32)
    dx = layer.backward(g)
    assert dx.shape == x.shape
    assert np.array_equal(dx, g.reshape(x.shape))


@FAST
@given(n=st.integers(1, 6), c=st.integers(1, 7), seed=st.integers(0, 2**31 - 1))
def test_mse_matches_torch(n, c, seed):
    rng = np.random.default_rng(seed)
    pred = rng.standard_normal((n, c)).astype(np.float32)
    target = rng.standard_normal((n, c)).astype(np.float32)
    loss = MSE()
    value = loss.forward(pred, target)
    grad = loss.backward()
    pt = t32(pred, True)
    ref = F.mse_loss(pt, t32(target))
    ref.backward()
    assert_close(value, ref)
    assert_close(grad, pt.grad)
    assert grad.dtype == np.float32

    labels = rng.integers(0, c, size=n)
    value = loss.forward(pred, labels)
    grad = loss.backward()
    pt = t32(pred, True)
    ref = F.mse_loss(pt, F.one_hot(torch.from_numpy(labels), c).float())
    ref.backward()
    assert_close(value, ref)
    assert_close(grad, pt.grad)


@FAST
@given(n=st.integers(1, 6), c=st.integers(1, 7), scale=st.floats(0.1, 20.0), seed=st.integers(0, 2**31 - 1))
def test_softmax_cross_entropy_matches_torch(n, c, scale, seed):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.standard_normal((n, c))).astype(np.float32)
    labels = rng.integers(0, c, size=n)
    loss = SoftmaxCrossEntropy()
    value = loss.forward(logits, labels)
    grad = loss.backward()
    lt = t32(logits, True)
    ref = F.cross_entropy(lt, torch.from_numpy(labels))
    ref.backward()
    assert_close(value, ref)
    assert_close(grad, lt.grad)
    assert grad.dtype == np.float32


# -- numerical stability ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_finite_for_huge_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0], [1e4, 1e4, -1e4]], dtype)
    labels = np.array([1, 1, 0])
    loss = SoftmaxCrossEntropy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        value = loss.forward(logits, labels)
        grad = loss.backward()
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    lt = torch.tensor(logits, requires_grad=True)
    ref = F.cross_entropy(lt, torch.from_numpy(labels))
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=1e-6)
    assert value == pytest.approx((2e4 + 0 + np.log(2)) / 3, rel=1e-6)
    np.testing.assert_allclose(grad, lt.grad.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_finite_for_huge_inputs(dtype):
    x = np.array([[-1e4, -50.0, 0.0, 50.0, 1e4]], dtype)
    layer = Sigmoid()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = layer.forward(x)
        dx = layer.backward(np.ones_like(x))
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(dx))
    assert out[0, 0] == 0.0 and out[0, -1] == 1.0 and out[0, 2] == 0.5
    np.testing.assert_allclose(out, torch.sigmoid(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=0)


# -- dropout ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_training_output_is_zero_or_scaled(p):
    x = np.random.default_rng(0).uniform(0.5, 1.5, size=(50, 40)).astype(np.float32)
    out = Dropout(p, seed=3).forward(x, training=True)
    dropped = out == 0
    assert dropped.any() and (~dropped).any()
    np.testing.assert_allclose(out[~dropped], x[~dropped] / (1 - p), rtol=1e-6)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_keeps_about_one_minus_p(p):
    x = np.ones((1000, 1000), np.float32)
    out = Dropout(p, seed=4).forward(x, training=True)
    kept = np.count_nonzero(out) / out.size
    assert abs(kept - (1 - p)) < 0.003  # std of the fraction is < 0.0005
    assert abs(out.mean() - 1.0) < 0.01  # inverted dropout keeps the expectation


def test_dropout_eval_mode_is_identity():
    x = np.random.default_rng(1).standard_normal((8, 9)).astype(np.float32)
    layer = Dropout(0.5, seed=0)
    out = layer.forward(x, training=False)
    assert np.array_equal(out, x)
    g = np.random.default_rng(2).standard_normal((8, 9)).astype(np.float32)
    assert np.array_equal(layer.backward(g), g)


def test_dropout_backward_uses_the_forward_mask():
    rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 1.5, size=(20, 30))
    g = rng.standard_normal((20, 30))
    layer = Dropout(0.4, seed=5)
    out = layer.forward(x, training=True)
    dx = layer.backward(g)
    np.testing.assert_array_equal(dx == 0, out == 0)
    np.testing.assert_allclose(dx, g * (out / x), rtol=1e-12)


def test_dropout_same_seed_same_mask_and_different_seed_differs():
    x = np.ones((30, 30), np.float32)
    a = Dropout(0.5, seed=7).forward(x, training=True)
    b = Dropout(0.5, seed=7).forward(x, training=True)
    c = Dropout(0.5, seed=8).forward(x, training=True)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    layer = Dropout(0.5, seed=9)
    first = layer.forward(x, training=True)
    second = layer.forward(x, training=True)
    assert not np.array_equal(first, second)  # a fresh mask each batch
    layer.reseed(9)
    assert np.array_equal(layer.forward(x, training=True), first)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_bad_probability(p):
    with pytest.raises(ValueError, match="Dropout probability"):
        Dropout(p)


# -- error messages --------------------------------------------------------------------------------

def test_dense_wrong_width_names_the_expected_shape():
    layer = Dense(4, 3)
    with pytest.raises(ValueError, match=r"expects input \(N, 4\)") as info:
        layer.forward(np.zeros((2, 5), np.float32))
    assert "(2, 5)" in str(info.value)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        layer.forward(np.zeros((2, 1, 4), np.float32))  # unflattened input


@pytest.mark.parametrize("loss", [SoftmaxCrossEntropy(), MSE()], ids=["cross_entropy", "mse"])
@pytest.mark.parametrize("bad", [3, -1, 10])
def test_losses_reject_out_of_range_labels(loss, bad):
    logits = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        loss.forward(logits, np.array([0, bad]))


def test_cross_entropy_rejects_wrong_number_of_labels():
    with pytest.raises(ValueError, match="expected 2 integer labels"):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3), np.float32), np.array([0, 1, 2]))


def test_mse_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        MSE().forward(np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32))
