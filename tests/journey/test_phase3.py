"""Phase 3: cross-entropy beats MSE on the same net, the learning-rate x momentum grid has a divergent
corner that the code detects, and momentum's step and stability limits are what the theory says."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from digitlab.journey import phase3
from digitlab.nn import SoftmaxCrossEntropy
from tests.journey.conftest import assert_png


@pytest.fixture(scope="module")
def result(notebook_run, journey_dir: Path) -> dict:
    r, _ = notebook_run(3)
    return r


def test_cross_entropy_beats_mse(result: dict) -> None:
    ce, mse = result["losses"]["cross-entropy"], result["losses"]["MSE"]
    # each at its own best learning rate (chosen on validation data)
    assert ce["best_val_accuracy"] > mse["best_val_accuracy"]
    assert ce["test_accuracy"] > mse["test_accuracy"]
    assert result["ce_minus_mse_test"] == pytest.approx(ce["test_accuracy"] - mse["test_accuracy"])
    # at the same learning rate cross-entropy wins wherever both are in MSE's too-small range
    assert {0.01, 0.03, 0.1} <= set(result["ce_wins_at_lrs"])
    # MSE's gradient is ~C/2 times smaller, so its best learning rate is larger
    assert mse["best_lr"] > ce["best_lr"]


def test_divergent_corner_detected(result: dict) -> None:
    cells = {(c["lr"], c["momentum"]): c for c in result["grid"]}
    assert len(cells) == len(result["grid_lrs"]) * len(result["grid_momenta"]) == 20
    assert result["divergent_corner"] is True
    lr_max, m_max = max(result["grid_lrs"]), max(result["grid_momenta"])
    assert cells[(lr_max, m_max)]["diverged"]
    assert not cells[(min(result["grid_lrs"]), 0.0)]["diverged"]
    # the corner is not the whole grid, and it is more than one column: momentum matters
    div = [k for k, c in cells.items() if c["diverged"]]
    assert 0 < len(div) < len(cells) / 2
    assert any(lr < lr_max for lr, _ in div)
    assert sorted(map(list, div)) == sorted(result["diverged_cells"])
    # every diverged run really failed, every other one really learned
    start = result["grid_start_val_loss"]
    for c in cells.values():
        if c["diverged"]:
            assert c["stopped_by_fit"] or not c["val_loss"] < start
        else:
            assert c["val_loss"] < start and c["val_accuracy"] > 0.5
    assert not cells[(result["best_cell"]["lr"], result["best_cell"]["momentum"])]["diverged"]


def test_is_corner_rules() -> None:
    lrs, moms = (0.1, 1.0), (0.0, 0.9)

    def grid(div: set) -> list[dict]:
        return [{"lr": lr, "momentum": m, "diverged": (lr, m) in div} for lr in lrs for m in moms]

    assert phase3.is_corner(grid({(1.0, 0.9)}))
    assert phase3.is_corner(grid({(1.0, 0.9), (1.0, 0.0)}))
    assert not phase3.is_corner(grid(set()))                      # nothing diverged
    assert not phase3.is_corner(grid({(1.0, 0.0)}))               # not closed upwards
    assert not phase3.is_corner(grid({(0.1, 0.0), (0.1, 0.9), (1.0, 0.0), (1.0, 0.9)}))  # everything


def test_diverged_rule() -> None:
    assert phase3.diverged(True, 0.1, 2.3)
    assert phase3.diverged(False, math.nan, 2.3)
    assert phase3.diverged(False, math.inf, 2.3)
    assert phase3.diverged(False, 2.5, 2.3)
    assert not phase3.diverged(False, 0.4, 2.3)


def test_momentum_theory(result: dict) -> None:
    for b in (0.0, 0.5, 0.9, 0.99):
        assert phase3.stable_lr_limit(b) == pytest.approx(2 * (1 + b), abs=1e-4)
        assert result["momentum_stable_lr_lambda"][str(b)] == pytest.approx(2 * (1 + b), abs=1e-4)
        assert result["momentum_step_multiplier"][str(b)] == pytest.approx(1 / (1 - b))
    # the velocity under a steady gradient really approaches 1/(1-beta): digitlab's SGD, one parameter
    from digitlab.nn import SGD

    class One:
        def __init__(self) -> None:
            self.p, self.g = np.zeros(1), np.ones(1)

        def parameters_and_grads(self):
            yield "p", self.p, self.g

    m = One()
    opt = SGD(m, lr=1.0, momentum=0.9)
    for _ in range(300):
        opt.step()
    assert opt.state["p"][0] == pytest.approx(10.0, rel=1e-6)


def test_recording_loss_and_smooth() -> None:
    loss = phase3.RecordingLoss(SoftmaxCrossEntropy())
    z = np.zeros((4, 10), np.float32)
    v = loss.forward(z, np.arange(4))
    assert loss.values == [v] and v == pytest.approx(math.log(10))
    assert loss.backward().shape == (4, 10)
    np.testing.assert_allclose(phase3.smooth([1, 3, 5, 7], 2), [1, 2, 4, 6])


def test_files(result: dict, journey_dir: Path) -> None:
    for name in result["figures"]:
        assert_png(journey_dir / name)
    assert result["quick"] is True and result["seed"] == 0
    assert result["command"] == "notebooks/03_training_dynamics.ipynb"
    assert {"train", "val", "test", "grid_train", "grid_epochs"} <= set(result["sizes"])
