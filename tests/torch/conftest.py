"""Shared fixtures of the PyTorch-twin tests: a tiny IDX data set (so that CLI runs evaluate in
milliseconds), the MNIST test set, and the shipped model's NumPy logits on it (computed once)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from digitlab.data import load_mnist, to_float, write_idx
from digitlab.data.mnist import repo_root

SHIPPED = repo_root() / "models" / "digitlab-cnn.npz"
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests run beside other work on a 2-core machine: one PyTorch thread."""
    torch = pytest.importorskip("torch", reason="the PyTorch twin needs torch: pip install 'digitlab[torch]'")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """1,200 training and 300 test images of MNIST as an IDX folder (``--data``, ``--val-size 200``)."""
    folder = tmp_path_factory.mktemp("tiny-mnist")
    train, test = load_mnist("train+val"), load_mnist("test")
    write_idx(folder / "train-images-idx3-ubyte", train.images[:1200])
    write_idx(folder / "train-labels-idx1-ubyte", train.labels[:1200].astype(np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte", test.images[:300])
    write_idx(folder / "t10k-labels-idx1-ubyte", test.labels[:300].astype(np.uint8))
    return folder


@pytest.fixture(scope="session")
def mnist_test():
    test = load_mnist("test")
    return to_float(test.images), test.labels


@pytest.fixture(scope="session")
def shipped_numpy_logits(mnist_test):
    """The shipped NumPy-trained CNN's logits on the whole MNIST test set, by the NumPy engine."""
    import digitlab

    return digitlab.load(SHIPPED).predict_logits(mnist_test[0], batch_size=500)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args, env=None, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "digitlab", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env or ONE_THREAD)
    return proc.returncode, proc.stdout, proc.stderr


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])
