"""The fast inference twin computes the same function as the model it was compiled from."""

import numpy as np
import pytest

from digitlab.models import build, cnn5_spec, cnn_spec, mlp_spec
from digitlab.nn.conv import AvgPool2D, BatchNorm, Conv2D, MaxPool2D
from digitlab.nn.infer import InferenceModel
from digitlab.nn.layers import Dense, Flatten, LeakyReLU, ReLU
from digitlab.nn.model import Sequential, load


def _randomise_bn(model, rng):
    """Non-trivial running statistics and affine parameters, so that a wrong fold shows."""
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            c = layer.num_features
            layer.buffers["running_mean"][:] = rng.normal(0, 0.5, c)
            layer.buffers["running_var"][:] = rng.uniform(0.2, 3.0, c)
            layer.params["gamma"][:] = rng.uniform(0.5, 1.5, c)
            layer.params["beta"][:] = rng.normal(0, 0.3, c)


@pytest.mark.parametrize("spec", [cnn_spec(), cnn5_spec(), mlp_spec()], ids=["cnn", "cnn5", "mlp"])
def test_matches_model_forward_on_zoo(spec):
    rng = np.random.default_rng(0)
    model = build(spec)
    _randomise_bn(model, rng)
    x = rng.random((7, 1, 28, 28), dtype=np.float32)
    want = model.forward(x)
    got = InferenceModel(model)(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_matches_on_strides_padding_pools_and_lone_batchnorm():
    rng = np.random.default_rng(1)
    model = Sequential([
        Conv2D(3, 8, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), bias=True, seed=1), BatchNorm(8), ReLU(),
        MaxPool2D(3, 2), BatchNorm(8), LeakyReLU(0.1),
        Conv2D(8, 6, 3, padding=1, seed=2), AvgPool2D(2), Flatten(), Dense(6 * 1 * 5, 9, seed=3), BatchNorm(9),
    ], input_shape=(3, 15, 21))
    _randomise_bn(model, rng)
    x = rng.normal(size=(4, 3, 15, 21)).astype(np.float32)
    np.testing.assert_allclose(InferenceModel(model)(x), model.forward(x), rtol=1e-4, atol=1e-4)


def test_shipped_model_same_predictions():
    from digitlab.data import load_mnist, to_float

    model = load("models/digitlab-cnn.npz")
    x = to_float(load_mnist("test").images[:300])
    want, got = model.forward(x), InferenceModel(model)(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-4)
    assert (got.argmax(1) == want.argmax(1)).all()


def test_bad_shape_and_unsupported_layer():
    model = build(cnn_spec())
    with pytest.raises(ValueError, match="expected input"):
        InferenceModel(model)(np.zeros((2, 28, 28), np.float32))
    padded = Sequential([Conv2D(1, 2, 3), MaxPool2D(2, 2, padding=1), Flatten()], input_shape=(1, 8, 8))
    with pytest.raises(NotImplementedError):
        InferenceModel(padded)
