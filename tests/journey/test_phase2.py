"""Phase 2: gradient descent behaves as the eigenvalues say, XOR is learned with hand-derived
gradients, and every backward pass in digitlab.nn matches finite differences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from digitlab.journey import phase2
from digitlab.nn import LAYERS


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("phase2")
    return phase2.run(out, quick=True, seed=0), out


def test_xor_reaches_full_accuracy(result: tuple[dict, Path]) -> None:
    r, _ = result
    assert r["xor_accuracy"] == 1.0
    assert r["xor_epochs_to_100"] is not None and r["xor_epochs_to_100"] <= r["xor_epochs"]
    out = np.array(r["xor_outputs"])
    assert np.all((out > 0.5) == np.array([False, True, True, False]))


def test_xor_hand_gradients_match_finite_differences(result: tuple[dict, Path]) -> None:
    r, _ = result
    assert r["xor_hand_grad_rel_error"] < 1e-6
    # and at a point away from the initialisation, on every tensor
    p = phase2.xor_init(5)
    for v in p.values():
        v += np.random.default_rng(3).standard_normal(v.shape)
    assert phase2.xor_numeric_check(p) < 1e-6


def test_diverging_lr_detected_and_good_lr_converges(result: tuple[dict, Path]) -> None:
    r, _ = result
    lrs = r["surface_learning_rates"]
    final, start = r["surface_final_loss_by_lr"], r["surface_start_loss_by_lr"]
    bad, good, slow = str(lrs["diverging"]), str(lrs["good"]), str(lrs["slow"])
    assert lrs["diverging"] > r["surface_stable_lr_limit"] > lrs["oscillating"]
    assert r["diverged_lrs"] == [lrs["diverging"]]
    assert final[bad] > start[bad]
    opt = r["surface_optimum_loss"]
    assert final[good] < 1e-3 or final[good] - opt < 1e-3
    assert final[str(lrs["oscillating"])] < start[str(lrs["oscillating"])]
    assert final[good] < final[slow] < start[slow]  # slow still descends, just far less


def test_gradient_descent_on_quadratic_is_exact_at_lr_one_over_lambda() -> None:
    # X = I, N = 2: H = 2 X^T X / N = I, every eigenvalue is 1, so lr = 1 / lambda lands on the optimum
    # in one step (the error shrinks by |1 - lr * lambda| = 0)
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([1.0, 2.0])
    path, losses = phase2.gradient_descent(np.zeros(2), lr=1.0, steps=1, X=X, y=y)
    np.testing.assert_allclose(path[-1], y)
    assert losses[-1] == pytest.approx(0.0)


def test_every_gradient_below_tolerance(result: tuple[dict, Path]) -> None:
    r, _ = result
    grads = r["gradients"]
    assert set(LAYERS) <= set(grads), set(LAYERS) - set(grads)
    assert {"MSE (loss)", "SoftmaxCrossEntropy (loss)"} <= set(grads)
    assert not r["gradients_skipped"]
    bad = {k: v for k, v in grads.items() if not v < 1e-6}
    assert not bad, bad
    assert set(r["gradients_detail"]["Conv2D"]) == {"input", "W", "b"}
    assert set(r["gradients_detail"]["BatchNorm"]) == {"input", "gamma", "beta"}


def test_gradient_table_catches_a_wrong_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    # the check must be able to fail: break Tanh's backward and its error must blow up
    cls = LAYERS["Tanh"]
    monkeypatch.setattr(cls, "backward", lambda self, dout: dout * (1 - self.out))
    worst, _, _ = phase2.gradient_table(0)
    assert worst["Tanh"] > 1e-3
    assert worst["Sigmoid"] < 1e-6


def test_files_written(result: tuple[dict, Path]) -> None:
    r, out = result
    for name in ("phase2_surface.png", "phase2_xor.png"):
        data = (out / name).read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "phase2_gradients.md").read_text()
    assert all(f"| {name} |" in md for name in r["gradients"])
    assert "**no**" not in md
    assert json.loads((out / "phase2.json").read_text()) == r
