"""Data-parallel training with PyTorch's own engine: two gloo processes on the CPU (loopback only)
train on a small subset, finish, and end with identical weights; only rank 0 writes files or prints."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch", reason="the PyTorch twin needs torch: pip install 'digitlab[torch]'")
pytest.importorskip("safetensors", reason="resume files need safetensors: pip install 'digitlab[torch]'")

import digitlab  # noqa: E402
from digitlab.models import build, mlp_spec  # noqa: E402
from digitlab.torch.train import DIGEST_ENV, weights_digest  # noqa: E402

from .conftest import ONE_THREAD, free_port  # noqa: E402


def test_two_gloo_processes_end_with_identical_weights(tmp_path, tiny_data):
    run = tmp_path / "run"
    digests_file = tmp_path / "digests.json"
    env = {**ONE_THREAD, DIGEST_ENV: str(digests_file), "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
    for _attempt in range(3):  # a free port can be taken between free_port() and torchrun's bind: retry then
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}",
               "-m", "digitlab", "train", "--backend", "torch", "--device", "cpu", "--arch", "mlp", "--hidden", "16",
               "--dropout", "0.3", "--augment", "--limit", "256", "--epochs", "1", "--batch-size", "64",
               "--data", str(tiny_data), "--val-size", "200", "--out", str(run / "ddp.npz"), "--json",
               "--no-progress"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
        network = any(s in proc.stderr for s in ("EADDRINUSE", "Address already in use", "DistNetworkError",
                                                 "Connection refused", "Connection reset"))
        if proc.returncode == 0 or not network:
            break
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1, proc.stdout  # rank 0 alone prints
    assert json.loads(summaries[0])["epochs"] == 1
    assert sorted(os.listdir(run)) == ["ddp.json", "ddp.npz", "ddp.resume.safetensors"]  # rank 0 alone writes

    report = json.loads(digests_file.read_text())
    assert report["world"] == 2 and len(report["digests"]) == 2
    assert report["digests"][0] == report["digests"][1]  # different shards and dropout masks, one model
    model = digitlab.load(run / "ddp.npz")
    assert weights_digest(model.state_dict()) == report["digests"][0]  # and it is the model rank 0 saved
    initial = build(mlp_spec((16,), dropout=0.3), seed=0)
    assert weights_digest(initial.state_dict()) != report["digests"][0]  # it did train
    assert model.meta["processes"] == 2 and model.meta["command"].startswith("torchrun --nproc_per_node=2")
