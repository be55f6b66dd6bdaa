"""`digitlab bench torch-train`: each side in its own process, and the PyTorch trainer and the NumPy
backend do the same work (the same mean loss over the epoch)."""

import pytest

pytest.importorskip("torch", reason="the PyTorch twin needs torch: pip install 'digitlab[torch]'")

from .conftest import last_json, run_cli  # noqa: E402


def test_torch_train_benchmark_reports_throughput_next_to_numpy():
    code, stdout, stderr = run_cli("bench", "torch-train", "--pairs", "1", "--images", "128", "--json", timeout=600)
    assert code == 0, stderr
    r = last_json(stdout)
    assert r["images"] == 128 and r["arch"] == "cnn"
    for side in ["numpy", "torch_cpu"] + (["torch_cuda", "torch_cuda_amp"] if r["cuda"] else []):
        assert r[f"{side}_epoch_s"] > 0 and r[f"{side}_images_per_s"] == pytest.approx(128 / r[f"{side}_epoch_s"])
    assert r["ratio_numpy_over_torch_cpu"] > 0
    # same weights, batches and optimiser: the same mean loss (float32 rounding apart)
    assert r["torch_cpu_mean_loss"] == pytest.approx(r["numpy_mean_loss"], rel=2e-3)
