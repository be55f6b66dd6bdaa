"""What the training phases (3-5) share: MNIST subsets, the `digitlab train` recipe, and one BLAS thread.

One BLAS thread, always: the matrices of these experiments are small (a batch of 128 through a
784-256 layer), so a second thread gains little, and on a busy machine (two cores shared with other
jobs) OpenBLAS threads that wait for each other made a quick phase ten times slower in our
measurements. It also keeps the numbers reproducible: a single-threaded matrix product adds in one
fixed order, so a rerun with the same seed gives the same bits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from digitlab.data import load_mnist, to_float
from digitlab.models import build
from digitlab.nn import SGD, History, Sequential, SoftmaxCrossEntropy, fit, make_schedule

BLAS_THREADS = 1


@contextmanager
def blas_threads(n: int = BLAS_THREADS) -> Iterator[None]:
    """Limit BLAS (OpenBLAS, MKL) to ``n`` threads inside the block."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(n):
        yield


@dataclass(frozen=True)
class Subsets:
    """Float images ``(N, 1, 28, 28)`` in [0, 1] and int labels; ``val`` is carved from the end of the
    training set (as `digitlab train` does) and ``test`` is the MNIST test set."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def mnist_subsets(train: int, val: int, test: int) -> Subsets:
    """The first ``train`` of the 55,000 training images, the first ``val`` of the 5,000 validation
    images and the first ``test`` test images. First-N, not random: MNIST's files are already shuffled,
    and ``--limit N`` of `digitlab train` takes the same images."""
    tr, va, te = load_mnist("train"), load_mnist("val"), load_mnist("test")
    return Subsets(to_float(tr.images[:train]), tr.labels[:train], to_float(va.images[:val]), va.labels[:val],
                   to_float(te.images[:test]), te.labels[:test])


RECIPE = {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "schedule": "cosine",
          "warmup_epochs": 0.5, "batch_size": 128}


def train_recipe(spec: dict[str, Any], x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, seed: int,
                 model: Sequential | None = None) -> tuple[Sequential, History]:
    """Train as ``digitlab train`` does by default (`RECIPE`: SGD with Nesterov momentum 0.9, weight
    decay 5e-4, cosine schedule with half an epoch of warm-up, batch 128), with no validation and no
    checkpoint; returns the model after the last epoch. ``model`` overrides the freshly built one (the
    permutation experiment passes one whose first layer it rearranged)."""
    model = model if model is not None else build(spec, seed=seed)
    opt = SGD(model, lr=lr, momentum=RECIPE["momentum"], nesterov=RECIPE["nesterov"],
              weight_decay=RECIPE["weight_decay"])
    steps = -(-len(x) // RECIPE["batch_size"])
    schedule = make_schedule(RECIPE["schedule"], epochs * steps, steps, RECIPE["warmup_epochs"])
    history = fit(model, opt, SoftmaxCrossEntropy(), x, y, epochs=epochs, batch_size=RECIPE["batch_size"],
                  seed=seed, schedule=schedule, progress=False)
    return model, history


__all__ = ["BLAS_THREADS", "RECIPE", "Subsets", "blas_threads", "mnist_subsets", "train_recipe"]
