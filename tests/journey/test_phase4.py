"""Phase 4: a fixed pixel permutation changes nothing for the dense net and hurts the CNN; shifted
digits hurt the dense net more; and the helpers do what they say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from digitlab.journey import phase4
from digitlab.models import build, mlp_spec
from tests.journey.conftest import assert_png


@pytest.fixture(scope="module")
def result(notebook_run) -> dict:
    r, _ = notebook_run(4)
    return r


def test_dense_net_is_blind_to_the_permutation(result: dict) -> None:
    a = result["accuracy"]
    assert abs(a["dense_original"] - a["dense_permuted"]) <= 0.01  # within 1 point
    assert result["dense_within_1_point"] is True
    # started from the matching rows, the permuted run is the same computation up to float64 rounding
    assert result["equivariant_max_logit_diff"] < 1e-9
    assert result["equivariant_same_predictions"] == 1.0
    assert result["equivariant_accuracy"][0] == result["equivariant_accuracy"][1]


def test_cnn_drops_more(result: dict) -> None:
    d = result["drop"]
    assert d["cnn"] > d["dense"] + 0.05  # in quick mode the CNN loses ~12 points, the dense net ~0
    assert result["accuracy"]["cnn_original"] > result["accuracy"]["cnn_permuted"]
    assert result["cnn_drop_larger"] is True


def test_translation(result: dict) -> None:
    t = result["translation_accuracy"]
    for name in ("dense", "cnn"):
        acc = [t[name][str(k)] for k in result["translation_shifts"]]
        assert acc[0] > 0.8 and acc[-1] < acc[0] - 0.3  # both fall apart by 6 pixels
    # the CNN holds up better at every shift from 1 to 4 pixels
    assert all(t["cnn"][str(k)] > t["dense"][str(k)] for k in range(1, 5))


def test_parameter_counts(result: dict) -> None:
    assert result["params"]["dense"] == 235146
    assert result["params_full_cnn"] == 197802
    assert sum(x["params"] for x in result["param_layers"]["cnn"]) == result["params"]["cnn"]
    assert result["param_layers"]["dense"][0]["params"] == 784 * 256 + 256


def test_permute_and_shift() -> None:
    perm = phase4.pixel_permutation(0)
    assert sorted(perm.tolist()) == list(range(784))
    np.testing.assert_array_equal(perm, phase4.pixel_permutation(0))  # seeded
    x = np.arange(2 * 784, dtype=np.float32).reshape(2, 1, 28, 28)
    p = phase4.permute(x, perm)
    np.testing.assert_array_equal(p.reshape(2, -1), x.reshape(2, -1)[:, perm])
    inverse = np.argsort(perm)
    np.testing.assert_array_equal(phase4.permute(p, inverse), x)
    img = np.zeros((1, 1, 5, 5), np.float32)
    img[0, 0, 2, 2] = 1
    assert phase4.shift(img, 2, 0)[0, 0, 2, 4] == 1 and phase4.shift(img, 2, 0).sum() == 1
    assert phase4.shift(img, 0, -1)[0, 0, 1, 2] == 1
    assert phase4.shift(img, 3, 0).sum() == 0  # moved out of the image: gone, not wrapped


def test_equivariant_dense_forward() -> None:
    perm = phase4.pixel_permutation(3)
    x = np.random.default_rng(1).random((6, 1, 28, 28)).astype(np.float64)
    spec = mlp_spec(dropout=0.0)
    a = build(spec, seed=2, dtype=np.float64).forward(x)
    b = phase4.equivariant_dense(spec, perm, 2, np.float64).forward(phase4.permute(x, perm))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_files(result: dict, journey_dir: Path) -> None:
    for name in result["figures"]:
        assert_png(journey_dir / name)
    assert result["sizes"]["train"] == 6000 and result["quick"] is True
