"""Phase 1: the loop neuron/layer and the NumPy ones compute the same thing, NumPy is faster, and the
run writes what it promises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from digitlab.journey import phase1
from digitlab.nn import Dense


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("phase1")
    return phase1.run(out, quick=True, seed=0), out


def test_neuron_loop_equals_numpy() -> None:
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal(17), rng.standard_normal(17), 0.3
    assert abs(phase1.neuron_loop(x.tolist(), w.tolist(), b) - phase1.neuron_numpy(x, w, b)) < 1e-12
    assert phase1.neuron_loop([1.0, 2.0], [3.0, -1.0], 0.5) == 1.5  # 3 - 2 + 0.5, by hand


@pytest.mark.parametrize("n, d_in, d_out", [(1, 1, 1), (5, 3, 7), (8, 16, 4)])
def test_dense_loop_equals_numpy_and_digitlab_dense(n: int, d_in: int, d_out: int) -> None:
    rng = np.random.default_rng(n + d_in + d_out)
    layer = Dense(d_in, d_out, dtype=np.float64)
    layer.params["b"][...] = rng.standard_normal(d_out)
    X = rng.standard_normal((n, d_in))
    W, b = layer.params["W"], layer.params["b"]
    loop = np.asarray(phase1.dense_loop(X.tolist(), W.tolist(), b.tolist()))
    assert loop.shape == (n, d_out)
    np.testing.assert_allclose(loop, phase1.dense_numpy(X, W, b), rtol=0, atol=1e-9)
    np.testing.assert_allclose(loop, layer.forward(X), rtol=0, atol=1e-9)  # same (in, out) convention


def test_dense_loop_rejects_wrong_width() -> None:
    with pytest.raises(ValueError, match="features"):
        phase1.dense_loop([[1.0, 2.0]], [[1.0], [2.0], [3.0]], [0.0])


def test_run_reports_identical_results(result: tuple[dict, Path]) -> None:
    r, _ = result
    assert r["max_abs_diff"] < 1e-9
    assert all(row["max_abs_diff"] < 1e-9 for row in r["timing_by_width"] + r["timing_by_batch"])


def test_numpy_faster_than_loops_at_largest_quick_size(result: tuple[dict, Path]) -> None:
    r, _ = result
    assert r["widths"][-1] == max(r["widths"]) and r["batches"][-1] == max(r["batches"])
    assert r["timing_by_width"][-1]["speedup"] > 1
    assert r["timing_by_batch"][-1]["speedup"] > 1
    assert r["speedup_largest"] > 1


def test_loop_time_grows_with_work(result: tuple[dict, Path]) -> None:
    # the loop does N * d_in * d_out multiply-adds: the largest width must cost more than the smallest
    r, _ = result
    assert r["timing_by_width"][-1]["loop_s"] > r["timing_by_width"][0]["loop_s"]


def test_files_written_and_json_matches(result: tuple[dict, Path]) -> None:
    r, out = result
    for name in ("phase1_timing.png", "phase1_shapes.png"):
        data = (out / name).read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "phase1.json").read_text()) == r
