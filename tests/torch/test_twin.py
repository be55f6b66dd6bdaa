"""One spec, two engines: the PyTorch module has the NumPy model's layers and shapes, weights move
both ways exactly, and the shipped model gives the same logits and predictions in both."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch twin needs torch: pip install 'digitlab[torch]'")

from digitlab.models import build, cnn5_spec, cnn_spec, mlp_spec  # noqa: E402
from digitlab.torch import build_module, numpy_to_torch, to_module, torch_to_numpy  # noqa: E402

from .conftest import SHIPPED  # noqa: E402

SPECS = {
    "mlp": mlp_spec((64, 32), dropout=0.1),
    "mlp-tanh": mlp_spec((20,), dropout=0.0, activation="tanh"),
    "cnn": cnn_spec(),
    "cnn5": cnn5_spec(channels=(8, 16), hidden=32),
}


@pytest.mark.parametrize("name", SPECS)
def test_module_has_the_spec_layers_and_shapes(name):
    spec = SPECS[name]
    model = build(spec, seed=1)
    module = numpy_to_torch(model, build_module(spec)).eval()
    assert len(module) == len(spec["layers"])
    assert sum(p.numel() for p in module.parameters()) == model.num_params()
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    a, t = x, torch.from_numpy(x)
    with torch.no_grad():
        for i, (layer, mod) in enumerate(zip(model.layers, module, strict=True)):
            a, t = layer.forward(a), mod(t)
            assert tuple(t.shape) == a.shape, (i, type(layer).__name__)
            np.testing.assert_allclose(t.numpy(), a, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(a).max())))
    assert a.shape == (5, 10)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_weights_round_trip_exactly_both_ways(name):
    spec = SPECS[name]
    source = build(spec, seed=3)
    rng = np.random.default_rng(7)
    for layer in source.layers:  # every value random: zero biases or unit BatchNorm scales prove nothing
        for arr in {**layer.params, **layer.buffers}.values():
            arr[...] = rng.random(arr.shape) + 0.5
    module = numpy_to_torch(source, build_module(spec))
    fresh = build(spec, seed=99).state_dict()
    back = torch_to_numpy(module, build(spec, seed=99))
    a, b = source.state_dict(), back.state_dict()
    assert a.keys() == b.keys() == fresh.keys() and all(not np.array_equal(a[k], fresh[k]) for k in a)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # PyTorch -> NumPy -> PyTorch
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))
    again = numpy_to_torch(torch_to_numpy(module, build(spec)), build_module(spec))
    s1, s2 = module.state_dict(), again.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1 if not k.endswith("num_batches_tracked"))


def test_numpy_and_torch_logits_agree_on_the_mnist_test_set(mnist_test, shipped_numpy_logits):
    import digitlab

    x, y = mnist_test
    module = to_module(digitlab.load(SHIPPED))
    with torch.inference_mode():
        logits = torch.cat([module(torch.from_numpy(x[i:i + 1000])) for i in range(0, len(x), 1000)]).numpy()
    ours = shipped_numpy_logits
    assert logits.shape == ours.shape == (10000, len(digitlab.load(SHIPPED).classes))
    assert np.abs(logits - ours).max() <= 1e-5 * np.abs(ours).max()
    assert np.array_equal(logits.argmax(1), ours.argmax(1))
    assert (ours.argmax(1) == y).mean() > 0.99  # a trained model: the comparison means something
