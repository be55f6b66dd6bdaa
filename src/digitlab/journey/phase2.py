"""Phase 2 — backprop: what gradient descent does on a loss surface, a network whose gradients we
derive by hand, and a check of every backward pass in `digitlab.nn` against finite differences.

1. **Loss surface.** For the linear model ``y = w1 x1 + w2 x2`` the MSE ``L(w) = mean((Xw - y)^2)``
   is a quadratic bowl with Hessian ``H = 2 X^T X / N``. Gradient descent ``w <- w - lr * grad`` shrinks
   the error along each eigenvector of H by ``|1 - lr * lambda|`` per step, so the learning rates are
   chosen relative to the largest eigenvalue ``lambda_max``: ``0.1 / lambda_max`` crawls,
   ``1 / lambda_max`` converges well, ``1.9 / lambda_max`` oscillates across the valley but still
   converges, and ``2.2 / lambda_max`` (> 2 / lambda_max) diverges. The figure makes this visible.
2. **XOR** with a 2-2-1 sigmoid network and hand-derived gradients (`xor_gradients`), plain gradient
   descent, decision boundary at a few points in training.
3. **Gradient table**: analytic vs numerical gradients, relative error, for every layer type in
   `digitlab.nn.LAYERS` and both losses, with `digitlab.nn.gradcheck` in float64.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.journey.report import Figure, Section, Table, num, plain, plt, provenance, write_json
from digitlab.nn import LAYERS, MSE, Flatten, Layer, SoftmaxCrossEntropy, gradcheck, relative_error

GRAD_TOL = 1e-6  # float64 central differences: a correct backward lands around 1e-9..1e-11

# --- 1. loss surface of a two-weight linear model -----------------------------------------------------


def surface_data(seed: int = 0, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Correlated inputs (so the bowl is an elongated ellipse, where the learning rate matters) and
    targets from ``w* = (2, -1)`` plus a little noise (so the minimum is not exactly 0)."""
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal(n)
    x2 = 0.6 * x1 + 0.5 * rng.standard_normal(n)
    X = np.stack([x1, x2], axis=1)
    y = X @ np.array([2.0, -1.0]) + 0.1 * rng.standard_normal(n)
    return X, y


def mse_loss(w: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    r = X @ w - y
    return float(np.mean(r * r))


def mse_grad(w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``dL/dw = 2 X^T (Xw - y) / N``."""
    return 2 * X.T @ (X @ w - y) / len(y)


def gradient_descent(w0: np.ndarray, lr: float, steps: int, X: np.ndarray, y: np.ndarray,
                     blow_up: float = 1e8) -> tuple[np.ndarray, list[float]]:
    """Plain GD; returns the path (steps+1, 2) and the losses. Stops early once the loss passes
    ``blow_up`` so a diverging run stays finite (and plottable) — it has already told its story."""
    w = np.array(w0, dtype=np.float64)
    path, losses = [w.copy()], [mse_loss(w, X, y)]
    for _ in range(steps):
        w = w - lr * mse_grad(w, X, y)
        path.append(w.copy())
        losses.append(mse_loss(w, X, y))
        if losses[-1] > blow_up:
            break
    return np.array(path), losses


def surface_experiment(seed: int, steps: int, path: Path) -> dict[str, Any]:
    X, y = surface_data(seed)
    w_opt = np.linalg.lstsq(X, y, rcond=None)[0]
    opt_loss = mse_loss(w_opt, X, y)
    hessian = 2 * X.T @ X / len(y)
    lam = np.linalg.eigvalsh(hessian)
    lam_min, lam_max = float(lam[0]), float(lam[-1])
    factors = {"slow": 0.1, "good": 1.0, "oscillating": 1.9, "diverging": 2.2}
    lrs = {k: float(f"{f / lam_max:.3g}") for k, f in factors.items()}
    w0 = np.array([-1.0, 2.5])
    runs = {k: gradient_descent(w0, lr, steps, X, y) for k, lr in lrs.items()}

    fig, ax = plt.subplots(figsize=(7, 6))
    lo, hi = w_opt - 4.0, w_opt + 4.0
    g1, g2 = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    W = np.stack([g1.ravel(), g2.ravel()])
    L = np.mean((X @ W - y[:, None]) ** 2, axis=0).reshape(g1.shape)
    cs = ax.contour(g1, g2, L, levels=np.geomspace(opt_loss + 1e-3, L.max(), 18), cmap="viridis", linewidths=0.8)
    ax.clabel(cs, cs.levels[::3], fontsize=7, fmt="%.2g")
    colors = {"slow": "tab:blue", "good": "tab:green", "oscillating": "tab:orange", "diverging": "tab:red"}
    for k, (p, losses) in runs.items():
        ax.plot(p[:, 0], p[:, 1], "o-", ms=2.5, lw=1, color=colors[k],
                label=f"{k}: lr = {lrs[k]:g} ({factors[k]:g}/λmax), final L = {losses[-1]:.3g}")
    ax.plot(*w_opt, "k*", ms=12, label=f"optimum, L = {opt_loss:.3g}")
    ax.plot(*w0, "ks", ms=6, label="start")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel("w1")
    ax.set_ylabel("w2")
    ax.set_title(f"MSE of y = w1 x1 + w2 x2: GD for {steps} steps (λ = {lam_min:.2f}, {lam_max:.2f})")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

    final = {str(lrs[k]): losses[-1] for k, (_, losses) in runs.items()}
    start = {str(lrs[k]): losses[0] for k, (_, losses) in runs.items()}
    diverged = [lrs[k] for k, (_, losses) in runs.items() if not losses[-1] <= losses[0]]
    return {
        "surface_learning_rates": lrs, "surface_lr_factors": factors, "surface_steps": steps,
        "surface_lambda": [lam_min, lam_max], "surface_stable_lr_limit": 2 / lam_max,
        "surface_optimum": w_opt, "surface_optimum_loss": opt_loss,
        "surface_start_loss_by_lr": start, "surface_final_loss_by_lr": final,
        "surface_steps_run_by_lr": {str(lrs[k]): len(losses) - 1 for k, (_, losses) in runs.items()},
        "diverged_lrs": diverged,
    }


# --- 2. XOR with a 2-2-1 network, gradients by hand ---------------------------------------------------

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_T = np.array([[0.0], [1.0], [1.0], [0.0]])


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def xor_init(seed: int) -> dict[str, np.ndarray]:
    """Small uniform weights: large enough to break the symmetry of the two hidden units."""
    rng = np.random.default_rng(seed)
    return {"W1": rng.uniform(-1, 1, (2, 2)), "b1": np.zeros(2), "W2": rng.uniform(-1, 1, (2, 1)), "b2": np.zeros(1)}


def xor_forward(p: dict[str, np.ndarray], X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hidden activations ``H`` (N, 2) and output probabilities ``Y`` (N, 1)."""
    H = sigmoid(X @ p["W1"] + p["b1"])
    return H, sigmoid(H @ p["W2"] + p["b2"])


def xor_loss(p: dict[str, np.ndarray], X: np.ndarray = XOR_X, T: np.ndarray = XOR_T) -> float:
    """Binary cross-entropy ``L = -mean(t log y + (1 - t) log(1 - y))``."""
    _, Y = xor_forward(p, X)
    eps = 1e-12
    return float(-np.mean(T * np.log(Y + eps) + (1 - T) * np.log(1 - Y + eps)))


def xor_gradients(p: dict[str, np.ndarray], X: np.ndarray = XOR_X, T: np.ndarray = XOR_T) -> dict[str, np.ndarray]:
    r"""Gradients of the binary cross-entropy of the 2-2-1 network, derived by hand.

    Forward, for a batch of N rows::

        Z1 = X W1 + b1        (N, 2)      W1: (2, 2), b1: (2,)
        H  = s(Z1)            (N, 2)      s(z) = 1 / (1 + e^-z),  s'(z) = s(z) (1 - s(z))
        z2 = H W2 + b2        (N, 1)      W2: (2, 1), b2: (1,)
        Y  = s(z2)            (N, 1)
        L  = -1/N sum_n [t_n log y_n + (1 - t_n) log(1 - y_n)]

    Backward, by the chain rule, one node at a time:

    - ``dL/dy_n = (1/N) (y_n - t_n) / (y_n (1 - y_n))``, and ``dy_n/dz2_n = y_n (1 - y_n)``: the
      sigmoid's derivative cancels the denominator, so ``dL/dz2 = (Y - T) / N``. (With MSE it would
      not cancel and ``y (1 - y)`` would slow learning whenever the output saturates — one reason
      cross-entropy is used for classification.)
    - ``z2 = H W2 + b2`` is a dense layer: ``dL/dW2 = H^T dL/dz2``, ``dL/db2 = sum_n dL/dz2``,
      ``dL/dH = dL/dz2 W2^T`` (each hidden unit reaches the loss through its weight to the output).
    - ``H = s(Z1)`` element-wise: ``dL/dZ1 = dL/dH * H (1 - H)``.
    - ``Z1 = X W1 + b1``: ``dL/dW1 = X^T dL/dZ1``, ``dL/db1 = sum_n dL/dZ1``.

    `xor_experiment` checks these against central differences before training.
    """
    H, Y = xor_forward(p, X)
    dz2 = (Y - T) / len(X)
    dH = dz2 @ p["W2"].T
    dZ1 = dH * H * (1 - H)
    return {"W1": X.T @ dZ1, "b1": dZ1.sum(axis=0), "W2": H.T @ dz2, "b2": dz2.sum(axis=0)}


def xor_numeric_check(p: dict[str, np.ndarray], h: float = 1e-6) -> float:
    """Largest relative error of `xor_gradients` against central differences over the 4 tensors."""
    ana = xor_gradients(p)
    worst = 0.0
    for k, v in p.items():
        num = np.zeros_like(v)
        for i in range(v.size):
            old = v.flat[i]
            v.flat[i] = old + h
            plus = xor_loss(p)
            v.flat[i] = old - h
            minus = xor_loss(p)
            v.flat[i] = old
            num.flat[i] = (plus - minus) / (2 * h)
        worst = max(worst, relative_error(ana[k], num))
    return worst


def xor_train(seed: int, epochs: int, lr: float, snapshot_at: list[int]) -> dict[str, Any]:
    """Full-batch gradient descent on the 4 points; records when accuracy first reaches 100 %."""
    p = xor_init(seed)
    snapshots, losses, first_perfect = {}, [], None
    for epoch in range(epochs + 1):
        if epoch in snapshot_at:
            snapshots[epoch] = {k: v.copy() for k, v in p.items()}
        _, Y = xor_forward(p, XOR_X)
        acc = float(np.mean((Y > 0.5) == (XOR_T > 0.5)))
        if acc == 1.0 and first_perfect is None:
            first_perfect = epoch
        losses.append(xor_loss(p))
        if epoch == epochs:
            break
        for k, g in xor_gradients(p).items():
            p[k] -= lr * g
    return {"params": p, "snapshots": snapshots, "losses": losses, "accuracy": acc, "first_perfect": first_perfect}


def plot_xor(snapshots: dict[int, dict[str, np.ndarray]], losses: list[float], path: Path) -> None:
    fig, axes = plt.subplots(1, len(snapshots) + 1, figsize=(3.2 * (len(snapshots) + 1), 3.3))
    g = np.linspace(-0.5, 1.5, 121)
    g1, g2 = np.meshgrid(g, g)
    grid = np.stack([g1.ravel(), g2.ravel()], axis=1)
    for ax, (epoch, p) in zip(axes, sorted(snapshots.items()), strict=False):
        _, Y = xor_forward(p, grid)
        ax.contourf(g1, g2, Y.reshape(g1.shape), levels=np.linspace(0, 1, 11), cmap="coolwarm", vmin=0, vmax=1)
        ax.contour(g1, g2, Y.reshape(g1.shape), levels=[0.5], colors="black", linewidths=1.5)
        _, Yp = xor_forward(p, XOR_X)
        acc = np.mean((Yp > 0.5) == (XOR_T > 0.5))
        ax.scatter(XOR_X[:, 0], XOR_X[:, 1], c=XOR_T[:, 0], cmap="coolwarm", edgecolors="black", s=80, vmin=0, vmax=1)
        ax.set_title(f"epoch {epoch}: L = {losses[epoch]:.3f}, acc {acc:.0%}", fontsize=9)
        ax.set_aspect("equal")
    axes[-1].semilogy(losses)
    axes[-1].set_xlabel("epoch")
    axes[-1].set_title("cross-entropy", fontsize=9)
    fig.suptitle("XOR, 2-2-1 sigmoid network, hand-written backprop (black: p = 0.5)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def xor_experiment(seed: int, epochs: int, path: Path, lr: float = 2.0, max_restarts: int = 20) -> dict[str, Any]:
    """Train from ``seed``; a 2-2-1 net can stall in a local minimum (one hidden unit doing all the
    work), so if it does we move to the next seed and say so (``xor_restarts``) instead of hiding it."""
    grad_err = xor_numeric_check(xor_init(seed))
    snap_at = sorted({0, epochs // 20, epochs // 5, epochs})
    for restart in range(max_restarts):
        run = xor_train(seed + restart, epochs, lr, snap_at)
        if run["accuracy"] == 1.0:
            break
    plot_xor(run["snapshots"], run["losses"], path)
    _, Y = xor_forward(run["params"], XOR_X)
    return {
        "xor_accuracy": run["accuracy"], "xor_epochs": epochs, "xor_epochs_to_100": run["first_perfect"],
        "xor_final_loss": run["losses"][-1], "xor_lr": lr, "xor_seed": seed + restart, "xor_restarts": restart,
        "xor_outputs": Y[:, 0], "xor_hand_grad_rel_error": grad_err, "xor_snapshot_epochs": snap_at,
    }


# --- 3. gradient table ----------------------------------------------------------------------------------

Case = tuple[Layer, np.ndarray, dict[str, Any]]


def _layer_cases(rng: np.random.Generator, seed: int) -> dict[str, Callable[[], Case]]:
    """Small constructions for the layers that need arguments, and inputs of the right shape.

    Biases and BatchNorm's gamma/beta are randomised: at their initial 0/1 a wrong gradient could hide.
    """
    img = (2, 2, 5, 5)

    def dense() -> Case:
        layer = LAYERS["Dense"](3, 4, seed=seed)
        layer.params["b"][...] = rng.standard_normal(4)
        return layer, rng.standard_normal((4, 3)), {}

    def conv() -> Case:
        layer = LAYERS["Conv2D"](2, 3, kernel_size=3, padding=1, seed=seed)
        layer.params["b"][...] = rng.standard_normal(3)
        return layer, rng.standard_normal(img), {}

    def batchnorm() -> Case:
        layer = LAYERS["BatchNorm"](2)
        layer.params["gamma"][...] = rng.uniform(0.5, 2, 2)
        layer.params["beta"][...] = rng.standard_normal(2)
        return layer, rng.standard_normal(img) * 2 + 1, {"training": True}

    def dropout() -> Case:
        layer = LAYERS["Dropout"](0.5, seed=seed)
        # the same mask on every forward, or finite differences would compare different functions
        return layer, rng.standard_normal((4, 5)), {"training": True,
                                                   "before_forward": lambda: layer.reseed(seed)}

    def pooled(name: str) -> Callable[[], Case]:
        return lambda: (LAYERS[name](), rng.standard_normal(img), {})

    return {"Dense": dense, "Conv2D": conv, "BatchNorm": batchnorm, "Dropout": dropout,
            "MaxPool2D": pooled("MaxPool2D"), "AvgPool2D": pooled("AvgPool2D"),
            "GlobalAvgPool": pooled("GlobalAvgPool"), "Flatten": pooled("Flatten")}


def gradient_table(seed: int) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, str]]:
    """Relative error (worst over input and parameters) for every registered layer and both losses.

    Layers not in `_layer_cases` are tried as ``cls()`` on an ``(4, 5)`` input, so a newly registered
    element-wise layer is covered automatically; one that cannot be built that way is listed as
    skipped, with the reason, rather than silently dropped.
    """
    rng = np.random.default_rng(seed)
    cases = _layer_cases(rng, seed)
    worst: dict[str, float] = {}
    detail: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}
    for name in sorted(LAYERS):
        try:
            layer, x, kw = cases[name]() if name in cases else (LAYERS[name](), rng.standard_normal((4, 5)), {})
        except Exception as exc:  # report it, don't fail the whole table
            skipped[name] = f"{type(exc).__name__}: {exc}"
            continue
        errs = gradcheck(layer, x, max_checks=None, seed=seed, **kw)
        detail[name], worst[name] = errs, max(errs.values())
    logits = rng.standard_normal((5, 4))
    for name, loss, target in (("MSE (loss)", MSE(), rng.standard_normal((5, 4))),
                               ("SoftmaxCrossEntropy (loss)", SoftmaxCrossEntropy(), rng.integers(0, 4, 5))):
        # Flatten on (N, C) is the identity, so the input gradient is exactly the loss's backward
        errs = gradcheck(Flatten(), logits, loss, target, max_checks=None, seed=seed)
        detail[name], worst[name] = errs, max(errs.values())
    return worst, detail, skipped


def gradients_markdown(worst: dict[str, float], detail: dict[str, dict[str, float]], skipped: dict[str, str]) -> str:
    lines = ["| layer / loss | tensors checked | max relative error | < 1e-6 |", "|---|---|---|---|"]
    for name, err in worst.items():
        tensors = ", ".join(f"{k} {v:.1e}" for k, v in detail[name].items())
        lines.append(f"| {name} | {tensors} | {err:.2e} | {'yes' if err < GRAD_TOL else '**no**'} |")
    lines += [f"| {name} | skipped: {why} | | |" for name, why in skipped.items()]
    return ("Analytic (backprop) vs numerical (central differences, h = 1e-6) gradients, float64, "
            "every entry checked.\n\n" + "\n".join(lines) + "\n")


# --- run ------------------------------------------------------------------------------------------------


def run(out_dir: Path, quick: bool = False, seed: int = 0, command: str | None = None) -> dict[str, Any]:
    """All three experiments; writes ``phase2_surface.png``, ``phase2_xor.png``, ``phase2_gradients.md``
    and ``phase2.json`` into ``out_dir`` and returns the dict of ``phase2.json``.

    ``quick`` trains XOR for fewer epochs and takes fewer GD steps; the science is the same.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    result.update(surface_experiment(seed, steps=30 if quick else 60, path=out_dir / "phase2_surface.png"))
    result.update(xor_experiment(seed, epochs=3000 if quick else 10000, path=out_dir / "phase2_xor.png"))
    worst, detail, skipped = gradient_table(seed)
    result.update({"gradients": worst, "gradients_detail": detail, "gradients_skipped": skipped,
                   "gradient_tolerance": GRAD_TOL})
    (out_dir / "phase2_gradients.md").write_text(gradients_markdown(worst, detail, skipped))
    result["figures"] = ["phase2_surface.png", "phase2_xor.png"]
    result.update(provenance(2, quick, seed, out_dir, command, t0))
    result = plain(result)
    write_json(out_dir / "phase2.json", result)
    return result


def section(r: dict[str, Any]) -> Section:
    """The report's text for phase 2, from ``phase2.json``."""
    lrs, f = r["surface_learning_rates"], r["surface_lr_factors"]
    final, start = r["surface_final_loss_by_lr"], r["surface_start_loss_by_lr"]
    lam_min, lam_max = r["surface_lambda"]
    s = Section("Phase 2 — backprop")
    runs = "; ".join(f"{k} lr {lrs[k]:g} ({f[k]:g}/λmax): loss {num(start[str(lrs[k])])} -> {num(final[str(lrs[k])])}"
                     for k in ("slow", "good", "oscillating", "diverging"))
    div = ", ".join(f"{v:g}" for v in r["diverged_lrs"]) or "none"
    s.blocks.append(Figure(
        "phase2_surface.png",
        f"The loss surface of the two-weight linear model y = w1 x1 + w2 x2 under MSE: a bowl whose Hessian "
        f"2XᵀX/N has eigenvalues {num(lam_min)} and {num(lam_max)} (correlated inputs make it a long valley). "
        f"Gradient descent multiplies the error along each eigenvector by |1 - lr λ| per step, so it converges "
        f"exactly when lr < 2/λmax = {num(r['surface_stable_lr_limit'])}. {r['surface_steps']} steps from the same "
        f"start: {runs}. Diverged (loss above its start): lr {div} — the one above the limit. The optimum's loss is "
        f"{num(r['surface_optimum_loss'])} (the noise in the targets)."))
    restarts = (f" (seed {r['xor_seed']}: {r['xor_restarts']} earlier seed(s) stalled in a local minimum)"
                if r["xor_restarts"] else "")
    s.blocks.append(Figure(
        "phase2_xor.png",
        f"XOR, which no single neuron can compute, learned by a 2-2-1 sigmoid network whose gradients are "
        f"derived by hand in `xor_gradients` (they match central differences to {r['xor_hand_grad_rel_error']:.1e}). "
        f"Full-batch gradient descent, lr {r['xor_lr']:g}{restarts}: the black line is the decision boundary "
        f"p = 0.5 at epochs {', '.join(str(e) for e in r['xor_snapshot_epochs'])}. It reaches "
        f"{100 * r['xor_accuracy']:.0f} % at epoch {r['xor_epochs_to_100']}; after {r['xor_epochs']:,} epochs the "
        f"cross-entropy is {num(r['xor_final_loss'])}. The two hidden units each draw one line; the output "
        f"combines them into the band between the lines."))
    detail = r["gradients_detail"]
    rows = [[name, ", ".join(f"{k} {v:.1e}" for k, v in detail[name].items()), f"{err:.2e}",
             "yes" if err < r["gradient_tolerance"] else "**no**"] for name, err in r["gradients"].items()]
    rows += [[name, f"skipped: {why}", "", ""] for name, why in r["gradients_skipped"].items()]
    worst = max(r["gradients"].values())
    s.blocks.append(
        f"Every layer's hand-written backward pass against central differences (h = 1e-6, float64, every entry "
        f"of the input and of each parameter): the worst relative error over all {len(r['gradients'])} layers "
        f"and losses is {worst:.1e}, below the tolerance {r['gradient_tolerance']:g}. A wrong backward pass gives "
        f"errors near 1 (the test suite breaks one on purpose to check that the table would show it).")
    s.blocks.append(Table(["layer / loss", "relative error per tensor", "max", f"< {r['gradient_tolerance']:g}"], rows))
    return s


__all__ = ["gradient_descent", "gradient_table", "run", "section", "surface_data", "xor_forward", "xor_gradients"]
