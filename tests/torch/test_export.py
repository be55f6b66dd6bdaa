"""ONNX export: onnxruntime gives the NumPy model's logits (within 1e-4 relative) for every layer type
and on the whole MNIST test set, and `digitlab eval` reads .onnx files."""

import numpy as np
import pytest

pytest.importorskip("torch", reason="the PyTorch twin needs torch: pip install 'digitlab[torch]'")
pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install 'digitlab[torch]'")
pytest.importorskip("onnxruntime", reason="ONNX checks need onnxruntime: pip install 'digitlab[torch]'")

import digitlab  # noqa: E402
from digitlab.models import FORMAT, FORMAT_VERSION, build  # noqa: E402
from digitlab.torch.export import check_onnx, export_onnx  # noqa: E402
from digitlab.torch.onnx_model import OnnxModel  # noqa: E402

from .conftest import SHIPPED, last_json, run_cli  # noqa: E402


def _conv(cin, cout, k, stride=1, pad=0, bias=True):
    return {"type": "Conv2D", "in_channels": cin, "out_channels": cout, "kernel_size": [k, k], "stride": [stride] * 2,
            "padding": [pad] * 2, "bias": bias, "init": "he"}


EVERY_LAYER = {
    "format": FORMAT, "version": FORMAT_VERSION, "input_shape": [1, 28, 28], "classes": [str(i) for i in range(10)],
    "meta": {"arch": "every-layer", "temperature": 1.5},
    "layers": [
        _conv(1, 6, 3, stride=2, pad=1), {"type": "BatchNorm", "num_features": 6}, {"type": "LeakyReLU", "alpha": 0.1},
        {"type": "AvgPool2D", "kernel_size": [3, 3], "stride": [1, 1], "padding": [1, 1]},
        _conv(6, 8, 3, bias=False), {"type": "Tanh"},
        {"type": "MaxPool2D", "kernel_size": [3, 3], "stride": [2, 2], "padding": [1, 1]},
        {"type": "Sigmoid"}, {"type": "GlobalAvgPool"},
        {"type": "Dense", "in_features": 8, "out_features": 12, "bias": False, "init": "xavier"},
        {"type": "BatchNorm", "num_features": 12}, {"type": "ReLU"}, {"type": "Dropout", "p": 0.5},
        {"type": "Dense", "in_features": 12, "out_features": 10, "bias": True, "init": "he"},
    ],
}


def test_every_layer_type_exports_exactly(tmp_path):
    model = build(EVERY_LAYER, seed=2)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        for name, buf in layer.buffers.items():
            buf[...] = rng.random(buf.shape) + (0.5 if name == "running_var" else -0.5)
        for p in layer.params.values():
            p[...] = rng.normal(0, 1, p.shape)
    path = export_onnx(model, tmp_path / "every.onnx")
    x = rng.random((7, 1, 28, 28), dtype=np.float32)
    result = check_onnx(path, model, x)
    assert result["max_rel_diff"] <= 1e-5 and result["same_predictions"] == 1.0
    onnx_model = OnnxModel(path)
    assert onnx_model.meta == model.meta and onnx_model.classes == model.classes
    assert onnx_model.input_shape == (1, 28, 28) and onnx_model.forward(x).shape == (7, 10)


def test_shipped_model_in_onnxruntime_equals_numpy_on_the_mnist_test_set(tmp_path, mnist_test, shipped_numpy_logits):
    path = export_onnx(digitlab.load(SHIPPED), tmp_path / "cnn.onnx")
    theirs = OnnxModel(path).predict_logits(mnist_test[0], batch_size=1000)
    ours = shipped_numpy_logits
    assert theirs.shape == ours.shape == (10000, len(digitlab.load(SHIPPED).classes))
    assert np.abs(theirs - ours).max() <= 1e-4 * np.abs(ours).max()
    assert np.array_equal(theirs.argmax(1), ours.argmax(1))


def test_export_and_eval_commands(tmp_path, tiny_data):
    model = build(EVERY_LAYER, seed=3)
    model.save(tmp_path / "m.npz")
    code, stdout, stderr = run_cli("export", tmp_path / "m.npz", "--onnx", tmp_path / "m.onnx", "--check-images", "200",
                                   "--json")
    assert code == 0, stderr
    summary = last_json(stdout)
    assert summary["check"]["images"] == 200 and summary["check"]["max_rel_diff"] <= 1e-4
    results = []
    for name in ("m.npz", "m.onnx"):
        code, stdout, stderr = run_cli("eval", tmp_path / name, "--data", tiny_data, "--json")
        assert code == 0, stderr
        results.append(last_json(stdout))
    assert results[0]["n"] == results[1]["n"] == 300
    assert results[0]["confusion"] == results[1]["confusion"]


def test_export_errors_are_one_line(tmp_path):
    code, _, stderr = run_cli("export", SHIPPED)
    assert code == 2 and "--onnx" in stderr and "Traceback" not in stderr
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    code, _, stderr = run_cli("eval", tmp_path / "bad.onnx")
    assert code == 2 and "not a readable ONNX model" in stderr and len(stderr.strip().splitlines()) == 1


def test_the_recogniser_runs_an_onnx_model(tmp_path):
    pytest.importorskip("cv2", reason="the recogniser needs OpenCV")
    from digitlab.vision.recognizer import load_model

    model = build(EVERY_LAYER, seed=4)
    path = export_onnx(model, tmp_path / "r.onnx")
    loaded = load_model(path)
    x = np.random.default_rng(1).random((3, 1, 28, 28), dtype=np.float32)
    assert isinstance(loaded, OnnxModel)
    np.testing.assert_allclose(loaded.forward(x), model.forward(x), rtol=1e-4, atol=1e-5)
