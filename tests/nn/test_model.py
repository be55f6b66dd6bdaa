"""`Sequential`: file format round trip, clear errors for bad files, whole-model gradient check."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import digitlab
from digitlab.errors import DigitlabError, ModelFileError
from digitlab.models import build, mlp_spec
from digitlab.nn import Dropout, Sequential, SoftmaxCrossEntropy, gradcheck


def small_spec(dropout: float = 0.1, activation: str = "relu"):
    return mlp_spec(hidden=(6, 5), dropout=dropout, activation=activation, input_shape=(1, 2, 3), num_classes=4)


def trained_looking(model: Sequential, seed: int = 0) -> Sequential:
    """Random non-zero biases so that a dropped bias would be noticed."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if "b" in layer.params:
            layer.params["b"][...] = rng.standard_normal(layer.params["b"].shape)
    return model


# -- save / load -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trip_identical_outputs(tmp_path, dtype):
    model = trained_looking(build(small_spec(), seed=3, dtype=dtype))
    model.meta["note"] = "hello"
    path = model.save(tmp_path / "m.npz")
    loaded = digitlab.load(path)
    assert isinstance(loaded, Sequential)
    assert loaded.dtype == np.dtype(dtype)
    assert loaded.spec() == model.spec()
    assert loaded.meta["note"] == "hello"
    x = np.random.default_rng(1).standard_normal((7, 1, 2, 3)).astype(dtype)
    out, back = model.forward(x), loaded.forward(x)
    assert back.dtype == np.dtype(dtype)
    assert np.array_equal(out, back)
    for k, v in model.state_dict().items():
        assert np.array_equal(v, loaded.state_dict()[k])


def test_loaded_model_differs_from_fresh_build(tmp_path):
    """The round trip must restore the weights, not re-initialise them from the spec."""
    model = trained_looking(build(small_spec(), seed=5))
    for layer in model.layers:
        if "W" in layer.params:
            layer.params["W"] *= 1.5
    loaded = digitlab.load(model.save(tmp_path / "m.npz"))
    fresh = build(small_spec(), seed=0)
    x = np.random.default_rng(2).standard_normal((4, 1, 2, 3)).astype(np.float32)
    assert np.array_equal(loaded.forward(x), model.forward(x))
    assert not np.allclose(loaded.forward(x), fresh.forward(x))


def test_file_has_no_pickles(tmp_path):
    model = build(small_spec(), seed=1)
    path = model.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    assert all(a.dtype != object for a in arrays.values())
    assert set(arrays) == {"__spec__", "1.W", "1.b", "4.W", "4.b", "7.W", "7.b"}
    spec = json.loads(str(arrays["__spec__"]))
    assert spec["format"] == "digitlab-model" and spec["version"] == 1


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path):
    model = build(small_spec(), seed=1)
    model.save(tmp_path / "m.npz")
    model.save(tmp_path / "m.npz")  # overwrite
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_failed_save_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    old = trained_looking(build(small_spec(), seed=1))
    old.save(path)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr("digitlab.nn.model.np.savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        build(small_spec(), seed=2).save(path)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
    assert path.read_bytes() == before
    x = np.ones((2, 1, 2, 3), np.float32)
    assert np.array_equal(digitlab.load(path).forward(x), old.forward(x))


def test_save_creates_missing_folders(tmp_path):
    path = build(small_spec(), seed=1).save(tmp_path / "a" / "b" / "m.npz")
    assert path.is_file()
    assert isinstance(digitlab.load(path), Sequential)


# -- bad files -------------------------------------------------------------------------------------

def test_load_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        digitlab.load(tmp_path / "nope.npz")


def test_load_non_digitlab_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(ModelFileError, match="not a digitlab model"):
        digitlab.load(path)


def test_load_random_bytes_raises_model_file_error(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(np.random.default_rng(0).bytes(512))
    with pytest.raises(ModelFileError) as info:
        digitlab.load(path)
    assert str(path) in str(info.value)


def test_load_random_bytes_message_says_what_is_wrong(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(np.random.default_rng(0).bytes(512))
    with pytest.raises(ModelFileError) as info:
        digitlab.load(path)
    message = str(info.value)
    assert "pickled" not in message, f"misleading message for random bytes: {message}"
    assert "not a readable .npz" in message or "not a digitlab model" in message, message


def test_load_corrupt_zip(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(ModelFileError, match="not a readable .npz"):
        digitlab.load(path)


def test_load_npy_file_named_npz(tmp_path):
    path = tmp_path / "array.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ModelFileError, match="not a"):
        digitlab.load(path)


def test_load_pickled_object_array_is_refused(tmp_path):
    path = tmp_path / "pickle.npz"
    np.savez(path, __spec__=np.array([{"format": "digitlab-model"}], dtype=object))
    with pytest.raises(ModelFileError, match="pickled"):
        digitlab.load(path)


def _rewrite_spec(src, dst, **changes):
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    spec = json.loads(str(arrays["__spec__"]))
    spec.update(changes)
    arrays["__spec__"] = np.array(json.dumps(spec))
    np.savez(dst, **arrays)


def test_load_future_version(tmp_path):
    src = build(small_spec(), seed=1).save(tmp_path / "m.npz")
    _rewrite_spec(src, tmp_path / "v999.npz", version=999)
    with pytest.raises(ModelFileError, match="version 999 is not supported") as info:
        digitlab.load(tmp_path / "v999.npz")
    assert "reads version 1" in str(info.value)


def test_load_wrong_format_name(tmp_path):
    src = build(small_spec(), seed=1).save(tmp_path / "m.npz")
    _rewrite_spec(src, tmp_path / "other.npz", format="keras")
    with pytest.raises(ModelFileError, match="not a digitlab model file.*keras"):
        digitlab.load(tmp_path / "other.npz")


def test_load_spec_not_json(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, __spec__=np.array("{not json"))
    with pytest.raises(ModelFileError, match="not valid JSON"):
        digitlab.load(path)


def test_load_spec_json_but_not_an_object(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, __spec__=np.array("[1, 2]"))
    with pytest.raises(ModelFileError, match="not a digitlab model"):
        digitlab.load(path)


def test_load_unknown_layer_type(tmp_path):
    src = build(small_spec(), seed=1).save(tmp_path / "m.npz")
    _rewrite_spec(src, tmp_path / "conv.npz", layers=[{"type": "Conv9D"}])
    with pytest.raises(ModelFileError, match="cannot be built.*Conv9D"):
        digitlab.load(tmp_path / "conv.npz")


def test_model_file_error_is_a_digitlab_error():
    assert issubclass(ModelFileError, DigitlabError)


def test_load_state_dict_wrong_shape():
    model = build(small_spec(), seed=1)
    state = model.state_dict()
    state["1.W"] = np.zeros((5, 5), np.float32)
    with pytest.raises(ModelFileError, match=r"1\.W has shape \(5, 5\), the model wants \(6, 6\)"):
        model.load_state_dict(state)


def test_load_state_dict_missing_and_unexpected_keys():
    model = build(small_spec(), seed=1)
    state = model.state_dict()
    state["9.W"] = state.pop("4.b")
    with pytest.raises(ModelFileError, match=r"missing \['4\.b'\], unexpected \['9\.W'\]"):
        model.load_state_dict(state)


def test_load_state_dict_copies_values_in_place():
    a, b = build(small_spec(), seed=1), build(small_spec(), seed=2)
    w = b.layers[1].params["W"]
    b.load_state_dict(a.state_dict())
    assert b.layers[1].params["W"] is w  # optimiser state keyed on the arrays stays valid
    assert np.array_equal(w, a.layers[1].params["W"])


# -- gradients through the whole model -------------------------------------------------------------

@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "leaky_relu"])
def test_gradcheck_whole_mlp_with_cross_entropy(activation):
    model = trained_looking(build(small_spec(dropout=0, activation=activation), seed=4))
    x = np.random.default_rng(0).standard_normal((5, 1, 2, 3))
    labels = np.array([0, 3, 2, 1, 3])
    errors = gradcheck(model, x, SoftmaxCrossEntropy(), labels, max_checks=None)
    assert set(errors) == {"input", "1.W", "1.b", "3.W", "3.b", "5.W", "5.b"}
    for name, err in errors.items():
        assert err < 1e-6, f"{name}: {err:.3g}"


def test_gradcheck_whole_mlp_with_dropout_in_training():
    model = trained_looking(build(small_spec(dropout=0.3, activation="tanh"), seed=4))
    dropouts = [layer for layer in model.layers if isinstance(layer, Dropout)]
    assert len(dropouts) == 2

    def fix_masks():
        for i, layer in enumerate(dropouts):
            layer.reseed(100 + i)

    x = np.random.default_rng(0).standard_normal((5, 1, 2, 3))
    errors = gradcheck(model, x, SoftmaxCrossEntropy(), np.array([0, 3, 2, 1, 3]), training=True,
                       max_checks=None, before_forward=fix_masks)
    for name, err in errors.items():
        assert err < 1e-6, f"{name}: {err:.3g}"


def _grads_after_backward(model, x, labels, input_grad):
    loss = SoftmaxCrossEntropy()
    loss.forward(model.forward(x, training=False), labels)
    result = model.backward(loss.backward(), input_grad=input_grad)
    return result, {k: g.copy() for k, g in model.named_grads().items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_without_input_grad_same_param_grads(dtype):
    model = trained_looking(build(small_spec(dropout=0), seed=6, dtype=dtype))
    x = np.random.default_rng(3).standard_normal((6, 1, 2, 3)).astype(dtype)
    labels = np.array([0, 1, 2, 3, 0, 1])
    dx, full = _grads_after_backward(model, x, labels, input_grad=True)
    assert dx is not None and dx.shape == x.shape
    for g in model.named_grads().values():
        g[...] = 0  # stale grads must not make the second pass look right
    none, partial = _grads_after_backward(model, x, labels, input_grad=False)
    assert none is None
    assert set(full) == set(partial)
    for k in full:
        assert np.array_equal(full[k], partial[k]), k
        assert np.any(full[k] != 0), k
    # the first Dense layer computes its input gradient again afterwards
    dx_again, _ = _grads_after_backward(model, x, labels, input_grad=True)
    assert np.array_equal(dx_again, dx)


def test_predict_checks_input_shape_and_dtype():
    model = build(small_spec(), seed=1)
    x = np.random.default_rng(0).random((3, 1, 2, 3)).astype(np.float32)
    assert np.array_equal(model.predict_logits(x), model.forward(x))
    assert model.predict(x[0]).shape == (1,)  # one unbatched input
    assert model.predict(x.reshape(3, 6)).shape == (3,)  # flat inputs are reshaped
    with pytest.raises(ValueError, match=r"\(N, 1, 2, 3\)"):
        model.predict(np.zeros((3, 7), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        model.predict(np.zeros((3, 1, 2, 3), np.uint8))
