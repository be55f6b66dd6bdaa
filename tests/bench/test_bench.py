"""Benchmarks: each side in its own process, and both sides of a training benchmark do the same work.

Only tiny sizes here; the speed figures themselves belong to `make bench`, not to tests.
"""

import json
import subprocess
import sys

import pytest

from digitlab.bench.harness import Side, alternate, median_ratio
from digitlab.bench.train_epoch import count_flops


def test_flop_count_of_the_mlp_matches_the_hand_count():
    executed, conventional = count_flops("mlp", 60000)
    weights = 784 * 256 + 256 * 128 + 128 * 10
    assert conventional == 6 * weights * 60000  # 84.5 GFLOP, the figure of the issue
    assert executed == conventional - 2 * 784 * 256 * 60000  # no input gradient for the first layer


def test_alternate_rotates_the_order(monkeypatch):
    calls = []

    def fake(bench, side, args=None, native_blas=False):
        calls.append(side)
        return {"t": {"a": 2.0, "b": 1.0}[side] * (len(calls))}

    monkeypatch.setattr("digitlab.bench.harness.run_worker", fake)
    res = alternate("x", [Side("a", "a"), Side("b", "b")], pairs=2)
    assert calls == ["a", "b", "b", "a"]
    assert median_ratio(res["a"], res["b"], "t") == pytest.approx(((2 * 1) / (1 * 2) + (2 * 4) / (1 * 3)) / 2)


@pytest.mark.parametrize("bench", ["mlp-train", "cnn-train"])
def test_training_benchmark_sides_do_the_same_arithmetic(bench):
    proc = subprocess.run([sys.executable, "-m", "digitlab", "bench", bench, "--pairs", "1", "--images", "512",
                           "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("numpy_epoch_s", "torch_epoch_s", "ratio_numpy_over_torch", "matmul_peak_gflops_numpy",
                "numpy_gflops", "gflop_per_epoch"):
        assert key in r and r[key] > 0
    # same weights, same batches, same optimiser: the same mean loss over the epoch
    assert r["numpy_mean_loss"] == pytest.approx(r["torch_mean_loss"], rel=2e-3)
    assert r["numpy_native_blas_mean_loss"] == pytest.approx(r["torch_mean_loss"], rel=2e-3)


def test_live_bench_quick():
    from digitlab.bench.live import LiveBench, run_live_bench

    r = run_live_bench(frames=24, stability_seeds=1, sizes=((240, 320),))
    assert r["ms_p99_320x240"] >= r["ms_median_320x240"] > 0
    assert r["cpu_ms_median_noreuse_320x240"] > 0 and r["cpu_ms_median_bare_320x240"] > 0
    stages = r["stages_ms_median_320x240"]
    assert {"flatten", "threshold", "classify", "track", "decode"} <= set(stages)
    assert r["frames"] == 24 and len(r["stability_runs"]) == 2
    assert 0.9 <= r["stable_right_rate"] <= r["stable_correct"] <= 1 and 0 <= r["flip_rate"] < 0.05
    assert r["worst_run"]["right_rate"] == min(run["right_rate"] for run in r["stability_runs"])
    assert "320x240" in LiveBench().format(r)
