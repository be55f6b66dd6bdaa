"""Gradient checking by central finite differences, in float64.

For a scalar loss L(theta), ``dL/dtheta_i ~ (L(theta + h e_i) - L(theta - h e_i)) / 2h`` with error
O(h^2). We compare it with backprop's gradient by the relative error
``||g_analytic - g_numeric|| / max(||g_analytic|| + ||g_numeric||, tiny)``, per parameter and for the
input; below 1e-6 in float64 means the hand-written backward is right.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / denom) if denom > 1e-300 else 0.0


def numeric_grad(f: Callable[[], float], x: np.ndarray, h: float = 1e-6,
                 indices: np.ndarray | None = None) -> np.ndarray:
    """Central differences of ``f()`` w.r.t. ``x`` (perturbed in place and restored); optionally only
    at the flat ``indices`` (the rest stay 0)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size) if indices is None else indices:
        old = flat[i]
        flat[i] = old + h
        plus = f()
        flat[i] = old - h
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def gradcheck(
    layer_or_model, x: np.ndarray, loss=None, target: np.ndarray | None = None, *,
    training: bool = False, h: float = 1e-6, max_checks: int | None = 200, seed: int = 0,
    before_forward: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Relative error of backprop against finite differences for every parameter and the input.

    ``layer_or_model`` is a `Layer` or a `Sequential` (cast to float64 in place). Without ``loss`` the
    scalar is ``sum(out * R)`` for a fixed random ``R``, which exercises every output. ``max_checks``
    samples that many entries per tensor (``None``: all). ``before_forward`` runs before every forward
    (e.g. to re-seed dropout so the mask is fixed). Returns ``{"input": err, "W": err, ...}``.
    """
    net = layer_or_model.astype(np.float64)
    x = np.array(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    reset = before_forward or (lambda: None)
    reset()
    out = net.forward(x, training)
    proj = rng.standard_normal(out.shape)

    def scalar() -> float:
        reset()
        y = net.forward(x, training)
        return loss.forward(y, target) if loss is not None else float(np.sum(y * proj))

    reset()
    y = net.forward(x, training)
    if loss is not None:
        loss.forward(y, target)
        dout = loss.backward()
    else:
        dout = proj
    analytic = {"input": net.backward(dout)}
    params = net.named_parameters() if hasattr(net, "named_parameters") else dict(net.params)
    grads = net.named_grads() if hasattr(net, "named_grads") else dict(net.grads)
    analytic.update({k: g.copy() for k, g in grads.items()})
    tensors = {"input": x, **params}
    errors = {}
    for name, tensor in tensors.items():
        idx = None
        if max_checks is not None and tensor.size > max_checks:
            idx = rng.choice(tensor.size, size=max_checks, replace=False)
        num = numeric_grad(scalar, tensor, h, idx)
        ana = analytic[name] if idx is None else _masked(analytic[name], idx)
        errors[name] = relative_error(ana, num)
    return errors


def _masked(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = np.zeros_like(a)
    out.reshape(-1)[idx] = a.reshape(-1)[idx]
    return out


__all__ = ["gradcheck", "numeric_grad", "relative_error"]
