"""Losses: ``forward(pred, target) -> float`` then ``backward() -> dL/dpred``.

Both average over the batch (MSE over every element, as ``torch.nn.functional.mse_loss``), so the
gradient carries the ``1/N`` factor and learning rates do not depend on the batch size.
"""

from __future__ import annotations

import numpy as np


def one_hot(labels: np.ndarray, num_classes: int, dtype=np.float32) -> np.ndarray:
    """``(N,)`` int labels -> ``(N, C)`` rows of the identity."""
    out = np.zeros((len(labels), num_classes), dtype)
    out[np.arange(len(labels)), labels] = 1
    return out


def _check_labels(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(pred):
        raise ValueError(f"expected {len(pred)} integer labels (N,), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= pred.shape[1]):
        raise ValueError(f"labels must lie in [0, {pred.shape[1] - 1}], got {labels.min()}..{labels.max()}")
    return labels


class MSE:
    """Mean squared error ``L = mean((y - t)^2)`` over all ``N*C`` elements.

    ``dL/dy = 2 (y - t) / (N*C)``. Integer targets of shape ``(N,)`` are one-hot encoded, so MSE can
    train a classifier (Phase 3 compares it with cross-entropy).
    """

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        if target.ndim == 1 and pred.ndim == 2:
            target = one_hot(_check_labels(pred, target), pred.shape[1], pred.dtype)
        if target.shape != pred.shape:
            raise ValueError(f"MSE: prediction {pred.shape} and target {target.shape} differ in shape")
        self.diff = pred - target
        return float(np.mean(self.diff * self.diff))

    def backward(self) -> np.ndarray:
        return self.diff * self.diff.dtype.type(2 / self.diff.size)


class SoftmaxCrossEntropy:
    """Softmax followed by cross-entropy, fused: ``L = mean_n(logsumexp(z_n) - z_n[y_n])``.

    Subtracting the row maximum before exponentiating keeps it finite for logits of any size
    (``exp`` of a value <= 0 cannot overflow). Fused backward: ``dL/dz = (softmax(z) - onehot(y)) / N``;
    the Jacobian of softmax and the ``1/p`` of the log cancel, which is why the fused form is both
    cheaper and more stable than the two separate layers.
    """

    def forward(self, logits: np.ndarray, labels: np.ndarray) -> float:
        labels = _check_labels(logits, labels)
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        log_probs_true = shifted[np.arange(len(labels)), labels] - np.log(sum_exp[:, 0])
        self.probs = exp / sum_exp
        self.labels = labels
        return float(-np.mean(log_probs_true))

    def backward(self) -> np.ndarray:
        grad = self.probs.copy()
        grad[np.arange(len(self.labels)), self.labels] -= 1
        grad *= grad.dtype.type(1 / len(self.labels))
        return grad


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


LOSSES = {"cross_entropy": SoftmaxCrossEntropy, "mse": MSE}
