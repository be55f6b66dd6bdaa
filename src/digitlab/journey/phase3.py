"""Phase 3 — training dynamics: which loss, which learning rate, how much momentum.

1. **Softmax + cross-entropy vs MSE.** The same dense net (784-256-128-10, no dropout), the same
   initialisation and batches, trained once with `SoftmaxCrossEntropy` and once with `MSE` on the
   outputs against one-hot targets, each over a sweep of learning rates, plain SGD with momentum 0.9.
   The two gradients differ in kind: cross-entropy's ``dL/dz = (softmax(z) - t) / N`` fades once the
   right class wins clearly, MSE's ``2 (z - t) / (N C)`` keeps pulling every output to exactly 0 or 1
   (even a confidently right one) and is ``C / 2 = 5`` times smaller at the start, so MSE needs a
   larger learning rate to move at all. Each loss gets its best learning rate, chosen on validation
   data, and the test set is used once per loss.
2. **Learning rate x momentum.** A 5 x 4 grid, cross-entropy, constant learning rate, plain momentum:
   the final validation loss as a heat map, the loss curves, and the cells that diverge — detected,
   not eyeballed (`diverged`): the training loop stopped the run (loss NaN/inf or 50x its start) or the
   run ended no better than the untrained network.
3. **Momentum's effective step.** Momentum keeps ``v <- beta v + g``; with a steady gradient ``v``
   grows to ``g / (1 - beta)``, so the step is ``lr / (1 - beta)``: momentum 0.9 multiplies the learning
   rate by 10, momentum 0.99 by 100. Plotting the grid against ``lr / (1 - beta)`` shows the divergent
   corner of the heat map is where that product is too large.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import matplotlib.ticker
import numpy as np

from digitlab.errors import TrainingDiverged
from digitlab.journey.experiment import BLAS_THREADS, Subsets, blas_threads, mnist_subsets
from digitlab.journey.report import Figure, Section, Table, num, pct, plain, plt, provenance, write_json
from digitlab.models import build, mlp_spec
from digitlab.nn import MSE, SGD, SoftmaxCrossEntropy, evaluate, fit

LOSS_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
GRID_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
GRID_MOMENTA = (0.0, 0.5, 0.9, 0.99)
LOSS_MOMENTUM = 0.9
BATCH = 128
SIZES = {
    True: {"train": 3000, "val": 1000, "test": 2000, "loss_epochs": 3, "grid_train": 3000, "grid_epochs": 4},
    False: {"train": 55000, "val": 5000, "test": 10000, "loss_epochs": 5, "grid_train": 20000, "grid_epochs": 5},
}
LOSSES = {"cross-entropy": SoftmaxCrossEntropy, "MSE": MSE}


def dense_spec() -> dict[str, Any]:
    """The dense net of this phase: `digitlab train --arch mlp` without dropout, so that nothing but
    the loss and the optimiser differ between runs."""
    return mlp_spec(hidden=(256, 128), dropout=0.0)


class RecordingLoss:
    """A loss that remembers the value of every forward call: `fit` reports per epoch, the dynamics
    (and a divergence) happen per step."""

    def __init__(self, loss: Any) -> None:
        self.loss, self.values = loss, []

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        value = self.loss.forward(pred, target)
        self.values.append(value)
        return value

    def backward(self) -> np.ndarray:
        return self.loss.backward()


def diverged(stopped: bool, final_loss: float, start_loss: float) -> bool:
    """A run diverged when the training loop stopped it (`TrainingDiverged`: loss NaN/inf or 50x its
    start) or when it ended no better than it began (final validation loss not below the untrained
    network's)."""
    return bool(stopped or not math.isfinite(final_loss) or final_loss >= start_loss)


def train_dense(loss_name: str, data: Subsets, n_train: int, lr: float, momentum: float, epochs: int,
                seed: int) -> dict[str, Any]:
    """One run of the dense net with plain SGD (constant ``lr``, ``momentum``, no weight decay)."""
    model = build(dense_spec(), seed=seed)
    loss = RecordingLoss(LOSSES[loss_name]())
    opt = SGD(model, lr=lr, momentum=momentum)
    stopped, message = False, ""
    try:
        history = fit(model, opt, loss, data.x_train[:n_train], data.y_train[:n_train], x_val=data.x_val,
                      y_val=data.y_val, epochs=epochs, batch_size=BATCH, seed=seed, progress=False)
        val_curve = [e.val_accuracy for e in history.epochs]
    except TrainingDiverged as exc:
        stopped, message, val_curve = True, str(exc), []
    with np.errstate(all="ignore"):  # a diverged model may overflow: its loss is simply inf or nan
        val_loss, val_acc, _ = evaluate(model, data.x_val, data.y_val, LOSSES[loss_name]())
    return {"model": model, "loss": loss_name, "lr": lr, "momentum": momentum, "stopped": stopped,
            "stop_message": message, "step_losses": loss.values, "val_accuracy_by_epoch": val_curve,
            "val_loss": float(val_loss), "val_accuracy": val_acc}


# --- 1. cross-entropy vs MSE ----------------------------------------------------------------------------


def loss_comparison(data: Subsets, sz: dict[str, int], seed: int, path: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in LOSSES:
        runs[name] = [train_dense(name, data, sz["train"], lr, LOSS_MOMENTUM, sz["loss_epochs"], seed)
                      for lr in LOSS_LRS]
    best, out = {}, {}
    for name, rs in runs.items():
        ok = [r for r in rs if not r["stopped"]]
        b = max(ok, key=lambda r: (r["val_accuracy"], -r["lr"]))
        _, test_acc, _ = evaluate(b["model"], data.x_test, data.y_test)
        best[name] = b
        out[name] = {"best_lr": b["lr"], "best_val_accuracy": b["val_accuracy"], "test_accuracy": test_acc,
                     "val_accuracy_by_lr": {str(r["lr"]): (None if r["stopped"] else r["val_accuracy"]) for r in rs},
                     "stopped_lrs": [r["lr"] for r in rs if r["stopped"]],
                     "val_accuracy_by_epoch": b["val_accuracy_by_epoch"]}
    ce, mse = out["cross-entropy"], out["MSE"]
    same_lr = {str(lr): [ce["val_accuracy_by_lr"][str(lr)], mse["val_accuracy_by_lr"][str(lr)]] for lr in LOSS_LRS}
    plot_loss_comparison(runs, best, path)
    return {"losses": out, "loss_lrs": list(LOSS_LRS), "loss_momentum": LOSS_MOMENTUM,
            "ce_minus_mse_test": ce["test_accuracy"] - mse["test_accuracy"],
            "ce_minus_mse_val": ce["best_val_accuracy"] - mse["best_val_accuracy"],
            "same_lr_val_accuracy_ce_mse": same_lr,
            "ce_wins_at_lrs": [lr for lr in LOSS_LRS if None not in same_lr[str(lr)]
                               and same_lr[str(lr)][0] > same_lr[str(lr)][1]]}


def plot_loss_comparison(runs: dict[str, list[dict[str, Any]]], best: dict[str, dict[str, Any]], path: Path) -> None:
    colors = {"cross-entropy": "tab:blue", "MSE": "tab:orange"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for name, rs in runs.items():
        lrs = [r["lr"] for r in rs if not r["stopped"]]
        ax.semilogx(lrs, [100 * r["val_accuracy"] for r in rs if not r["stopped"]], "o-", color=colors[name],
                    label=name)
        b = best[name]
        ax.annotate(f"best {100 * b['val_accuracy']:.1f} %", (b["lr"], 100 * b["val_accuracy"]),
                    textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8, color=colors[name])
    ax.set_xlabel("learning rate (SGD, momentum 0.9)")
    ax.set_ylabel("validation accuracy after training (%)")
    lo = min(100 * r["val_accuracy"] for rs in runs.values() for r in rs if not r["stopped"])
    ax.set_ylim(max(0, lo - 5), 100)
    for name, rs in runs.items():  # diverged runs: a cross on the floor of the plot
        stopped = [r["lr"] for r in rs if r["stopped"]]
        ax.semilogx(stopped, [max(0, lo - 5) + 1] * len(stopped), "x", color=colors[name], ms=10, mew=2)
    ax.set_title("accuracy against learning rate (x: diverged)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    for name, b in best.items():
        curve = b["val_accuracy_by_epoch"]
        ax.plot(range(1, len(curve) + 1), [100 * a for a in curve], "o-", color=colors[name],
                label=f"{name}, lr {b['lr']:g} (its best)")
        same = next(r for r in runs[name] if r["lr"] == 0.1)
        if not same["stopped"] and b["lr"] != 0.1:
            c = same["val_accuracy_by_epoch"]
            ax.plot(range(1, len(c) + 1), [100 * a for a in c], "s--", color=colors[name], alpha=0.6,
                    label=f"{name}, lr 0.1")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("learning curves", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("The same dense net trained with softmax + cross-entropy and with MSE")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- 2. learning rate x momentum grid --------------------------------------------------------------------


def lr_momentum_grid(data: Subsets, sz: dict[str, int], seed: int) -> dict[str, Any]:
    start_loss, start_acc, _ = evaluate(build(dense_spec(), seed=seed), data.x_val, data.y_val, SoftmaxCrossEntropy())
    cells, curves = [], {}
    for momentum in GRID_MOMENTA:
        for lr in GRID_LRS:
            r = train_dense("cross-entropy", data, sz["grid_train"], lr, momentum, sz["grid_epochs"], seed)
            d = diverged(r["stopped"], r["val_loss"], start_loss)
            cells.append({"lr": lr, "momentum": momentum, "effective_lr": lr / (1 - momentum),
                          "val_loss": r["val_loss"], "val_accuracy": r["val_accuracy"], "diverged": d,
                          "stopped_by_fit": r["stopped"], "steps_run": len(r["step_losses"])})
            curves[(lr, momentum)] = r["step_losses"]
    div = [c for c in cells if c["diverged"]]
    ok = [c for c in cells if not c["diverged"]]
    best = min(ok, key=lambda c: c["val_loss"])
    return {
        "grid_lrs": list(GRID_LRS), "grid_momenta": list(GRID_MOMENTA), "grid": cells,
        "grid_start_val_loss": start_loss, "grid_start_val_accuracy": start_acc,
        "diverged_cells": [[c["lr"], c["momentum"]] for c in div],
        "divergent_corner": is_corner(cells),
        "best_cell": {k: best[k] for k in ("lr", "momentum", "effective_lr", "val_loss", "val_accuracy")},
        "max_effective_lr_converged": max(c["effective_lr"] for c in ok),
        "min_effective_lr_diverged": min((c["effective_lr"] for c in div), default=None),
        "equal_effective_lr": equal_effective_lr_groups(cells), **momentum_theory(),
        "_curves": curves,
    }


def is_corner(cells: list[dict[str, Any]]) -> bool:
    """The diverged cells form the high-lr, high-momentum corner: there is at least one, the largest
    (lr, momentum) is one of them, the smallest is not, and raising the lr or the momentum of a
    diverged cell never gives a converging one (the diverged set is closed upwards)."""
    div = {(c["lr"], c["momentum"]) for c in cells if c["diverged"]}
    keys = {(c["lr"], c["momentum"]) for c in cells}
    if not div or max(keys) not in div or min(keys) in div:
        return False
    return all((lr2, m2) in div for lr, m in div for lr2, m2 in keys if lr2 >= lr and m2 >= m)


def plot_heatmap(g: dict[str, Any], path: Path) -> None:
    lrs, moms = g["grid_lrs"], g["grid_momenta"]
    L = np.full((len(moms), len(lrs)), np.nan)
    for c in g["grid"]:
        i, j = moms.index(c["momentum"]), lrs.index(c["lr"])
        if not c["diverged"]:
            L[i, j] = c["val_loss"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    cmap = plt.get_cmap("viridis_r").copy()
    cmap.set_bad("#d9d9d9")
    im = ax.imshow(np.log10(L), cmap=cmap, origin="lower", aspect="auto")
    cb = fig.colorbar(im, ax=ax)
    cb.set_label("log10(final validation loss)")
    for c in g["grid"]:
        i, j = moms.index(c["momentum"]), lrs.index(c["lr"])
        if c["diverged"]:
            why = "stopped" if c["stopped_by_fit"] else f"loss {num(c['val_loss'], 3)} ≥ start"
            ax.text(j, i, f"DIVERGED\n({why})", ha="center", va="center", fontsize=7, color="darkred",
                    fontweight="bold")
        else:
            shade = (np.log10(L[i, j]) - im.norm.vmin) / max(im.norm.vmax - im.norm.vmin, 1e-12)
            ax.text(j, i, f"{c['val_loss']:.3f}\n{100 * c['val_accuracy']:.1f} %", ha="center", va="center",
                    fontsize=8, color="white" if shade > 0.55 else "black")
    # outline the divergent region cell by cell: an edge is drawn where a diverged cell meets a
    # converged one or the border
    div = {(moms.index(m), lrs.index(lr)) for lr, m in g["diverged_cells"]}
    for i, j in div:
        for di, dj, xs, ys in ((1, 0, [j - .5, j + .5], [i + .5] * 2), (-1, 0, [j - .5, j + .5], [i - .5] * 2),
                               (0, 1, [j + .5] * 2, [i - .5, i + .5]), (0, -1, [j - .5] * 2, [i - .5, i + .5])):
            if (i + di, j + dj) not in div:
                ax.plot(xs, ys, color="red", lw=3)
    b = g["best_cell"]
    ax.plot(lrs.index(b["lr"]) - 0.32, moms.index(b["momentum"]) + 0.3, marker="*", color="white", ms=15,
            mec="black")
    ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs])
    ax.set_yticks(range(len(moms)), [f"{v:g}" for v in moms])
    ax.set_xlabel("learning rate")
    ax.set_ylabel("momentum β")
    ax.set_title("Final validation loss (and accuracy); red: the divergent corner, star: best", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def smooth(values: list[float], window: int) -> np.ndarray:
    """Running mean (the per-step loss of SGD is noisy); shorter at the start rather than padded."""
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(v) < 2:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_curves(g: dict[str, Any], path: Path) -> None:
    lrs, moms, curves = g["grid_lrs"], g["grid_momenta"], g["_curves"]
    total = max(len(v) for v in curves.values())
    window = max(1, total // 25)
    fig, axes = plt.subplots(1, len(moms), figsize=(4 * len(moms), 3.8), sharey=True)
    colors = plt.get_cmap("plasma")(np.linspace(0, 0.85, len(lrs)))
    cap = 20 * g["grid_start_val_loss"]
    for ax, m in zip(axes, moms, strict=True):
        for lr, color in zip(lrs, colors, strict=True):
            v = np.minimum(np.nan_to_num(np.asarray(curves[(lr, m)], dtype=np.float64), nan=cap, posinf=cap), cap)
            ax.semilogy(np.arange(1, len(v) + 1), smooth(v.tolist(), window), color=color, lw=1.3, label=f"lr {lr:g}")
            cell = next(c for c in g["grid"] if c["lr"] == lr and c["momentum"] == m)
            if cell["diverged"]:
                ax.semilogy([len(v)], [max(v[-1], 1e-3)], "x", color=color, ms=10, mew=2.5)
        ax.axhline(g["grid_start_val_loss"], color="gray", ls=":", lw=1)
        ax.set_title(f"momentum β = {m:g} (effective lr x{1 / (1 - m):g})", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"training loss (running mean of {window} steps)")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Training loss of every grid cell (x: diverged; dotted: the untrained network's loss)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def stable_lr_limit(beta: float, hi: float = 6.0, tol: float = 1e-6) -> float:
    """The largest ``lr * lambda`` for which momentum SGD converges on ``L = lambda w^2 / 2``, from the
    iteration matrix: ``v' = beta v + lambda w``, ``w' = w - lr v'`` maps ``(w, v)`` by
    ``[[1 - lr lambda, -lr beta], [lambda, beta]]``, stable while its spectral radius is below 1. Found
    by bisection (the radius grows with lr past the limit); theory says ``2 (1 + beta)``."""
    def stable(a: float) -> bool:  # a = lr * lambda, lambda = 1
        return max(abs(np.linalg.eigvals(np.array([[1 - a, -a * beta], [1.0, beta]])))) < 1
    lo = 0.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if stable(mid) else (lo, mid)
    return lo


def momentum_theory(betas: tuple[float, ...] = GRID_MOMENTA) -> dict[str, Any]:
    """For each beta: the step multiplier ``1/(1-beta)`` on a steady gradient, and the stability limit
    of ``lr * lambda`` on a quadratic (computed, and the formula ``2(1+beta)``)."""
    return {"momentum_step_multiplier": {str(b): 1 / (1 - b) for b in betas},
            "momentum_stable_lr_lambda": {str(b): stable_lr_limit(b) for b in betas},
            "momentum_stable_lr_lambda_formula": {str(b): 2 * (1 + b) for b in betas}}


def equal_effective_lr_groups(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells of the grid that share ``lr / (1 - beta)`` (to 3 digits): if momentum were only a larger
    learning rate, each group would end alike."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault(f"{c['effective_lr']:.3g}", []).append(c)
    return [{"effective_lr": float(k), "cells": [{"lr": c["lr"], "momentum": c["momentum"], "val_loss": c["val_loss"],
                                                    "diverged": c["diverged"]} for c in v]}
            for k, v in sorted(groups.items(), key=lambda kv: float(kv[0])) if len(v) > 1]


def plot_momentum(g: dict[str, Any], path: Path, steps: int = 400) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    colors = dict(zip(GRID_MOMENTA, ("tab:gray", "tab:green", "tab:blue", "tab:purple"), strict=True))
    ax = axes[0]
    t = np.arange(1, steps + 1)
    for m in GRID_MOMENTA:
        v = (1 - m ** t) / (1 - m) if m else np.ones_like(t, dtype=float)  # v_t = sum_{k<t} m^k for g = 1
        ax.semilogx(t, v, color=colors[m], lw=2, label=f"β = {m:g}")
        ax.axhline(1 / (1 - m), color=colors[m], ls="--", lw=0.8)
        ax.text(steps * 1.15, 1 / (1 - m), f"1/(1-β) = {1 / (1 - m):g}", va="center", fontsize=8, color=colors[m])
    ax.set_yscale("log")
    ax.set_xlim(1, steps * 6)
    ax.set_xlabel("step t (the same gradient g every step)")
    ax.set_ylabel("velocity v_t / g = step / (lr g)")
    ax.set_title("A steady gradient: v ← βv + g grows to g / (1-β)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    betas = np.linspace(0, 0.99, 60)
    ax.plot(betas, [stable_lr_limit(b) for b in betas], color="black", lw=2.5,
            label="computed (iteration matrix)")
    ax.plot(betas, 2 * (1 + betas), color="gold", ls="--", lw=1.5, label="2 (1 + β)")
    ax.plot(betas, 2 * (1 - betas), color="tab:red", ls=":", lw=1.5,
            label="2 (1 - β): if momentum were lr / (1-β)")
    ax.fill_between(betas, 0, [stable_lr_limit(b) for b in betas], color="tab:green", alpha=0.1)
    ax.text(0.05, 0.6, "converges", color="tab:green", fontsize=9)
    ax.set_xlabel("momentum β")
    ax.set_ylabel("largest stable lr x curvature λ")
    ax.set_title("A steep valley, L = λw²/2: the gradient flips sign\nand cancels in v", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[2]
    markers = dict(zip(GRID_MOMENTA, "osD^", strict=True))
    top = max(c["val_loss"] for c in g["grid"] if not c["diverged"]) * 2.5
    for m in GRID_MOMENTA:
        cs = [c for c in g["grid"] if c["momentum"] == m]
        ok = [c for c in cs if not c["diverged"]]
        bad = [c for c in cs if c["diverged"]]
        ax.loglog([c["effective_lr"] for c in ok], [c["val_loss"] for c in ok], markers[m] + "-", color=colors[m],
                  label=f"β = {m:g}", alpha=0.85)
        if bad:
            ax.loglog([c["effective_lr"] for c in bad], [top] * len(bad), "x", color=colors[m], ms=10, mew=2.5)
    ax.axhline(top, color="darkred", lw=0.5)
    ax.annotate("diverged", (1, top), xycoords=("axes fraction", "data"), xytext=(-4, 4),
                textcoords="offset points", ha="right", va="bottom", color="darkred", fontsize=8)
    ax.set_xlabel("effective learning rate lr / (1-β)")
    ax.set_ylabel("final validation loss")
    ax.set_title("The measured grid against lr / (1-β)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- run --------------------------------------------------------------------------------------------------


def run(out_dir: Path, quick: bool = False, seed: int = 0, command: str | None = None) -> dict[str, Any]:
    """Both experiments; writes ``phase3_loss.png``, ``phase3_grid.png``, ``phase3_curves.png``,
    ``phase3_momentum.png`` and ``phase3.json`` and returns the dict of ``phase3.json``.

    ``quick``: 3,000 training images (the full run: all 55,000 for the losses, 20,000 for the grid)
    and fewer epochs; the grid and the learning rates are the same.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sz = SIZES[quick]
    with blas_threads():
        data = mnist_subsets(sz["train"], sz["val"], sz["test"])
        result: dict[str, Any] = {"sizes": sz, "batch_size": BATCH, "blas_threads": BLAS_THREADS,
                                  "dense_params": build(dense_spec()).num_params()}
        result.update(loss_comparison(data, sz, seed, out_dir / "phase3_loss.png"))
        g = lr_momentum_grid(data, sz, seed)
    plot_heatmap(g, out_dir / "phase3_grid.png")
    plot_curves(g, out_dir / "phase3_curves.png")
    plot_momentum(g, out_dir / "phase3_momentum.png")
    del g["_curves"]
    result.update(g)
    result["figures"] = ["phase3_loss.png", "phase3_grid.png", "phase3_curves.png", "phase3_momentum.png"]
    result.update(provenance(3, quick, seed, out_dir, command, t0))
    result = plain(result)
    write_json(out_dir / "phase3.json", result)
    return result


def section(r: dict[str, Any]) -> Section:
    """The report's text for phase 3, from ``phase3.json``."""
    sz, ce, mse = r["sizes"], r["losses"]["cross-entropy"], r["losses"]["MSE"]
    s = Section("Phase 3 — training dynamics: loss, learning rate, momentum")
    s.blocks.append(
        f"The dense net 784-256-128-10 ({r['dense_params']:,} parameters, no dropout), plain SGD, batch "
        f"{r['batch_size']}, {sz['train']:,} training images, {sz['val']:,} validation images to choose, "
        f"{sz['test']:,} test images to report; the grid uses the first {sz['grid_train']:,} training images for "
        f"{sz['grid_epochs']} epochs.")
    wins = ", ".join(f"{lr:g}" for lr in r["ce_wins_at_lrs"]) or "none"
    diff = r["ce_minus_mse_test"]
    gap = ("Each tuned, the two end within a point of each other." if abs(diff) < 0.01 else
           f"Even with each tuned, {'cross-entropy' if diff > 0 else 'MSE'} is ahead by {abs(100 * diff):.1f} points "
           f"here.")
    s.blocks.append(Figure(
        "phase3_loss.png",
        f"Softmax + cross-entropy against MSE on the outputs (one-hot targets), same net, same initialisation, "
        f"momentum {r['loss_momentum']:g}, {sz['loss_epochs']} epochs, learning rates "
        f"{', '.join(f'{v:g}' for v in r['loss_lrs'])}. Each loss at its best learning rate (chosen on validation "
        f"data): cross-entropy {pct(ce['test_accuracy'], 2)} on test at lr {ce['best_lr']:g}, MSE "
        f"{pct(mse['test_accuracy'], 2)} at lr {mse['best_lr']:g} (difference {100 * r['ce_minus_mse_test']:+.2f} "
        f"points). At the same learning rate cross-entropy is ahead at lr {wins}: MSE's gradient "
        f"2(z - t)/(NC) starts C/2 = 5 times smaller than cross-entropy's (p - t)/N, so it needs a larger "
        f"learning rate to learn as fast, and it keeps pushing outputs that are already right towards exactly "
        f"1 and 0. {gap} Cross-entropy also gives probabilities, which the recogniser's rejection needs."))
    b = r["best_cell"]
    div = r["diverged_cells"]
    div_text = "; ".join(f"lr {lr:g} with β {m:g}" for lr, m in div)
    corner = "They form the high-lr, high-momentum corner" if r["divergent_corner"] else \
        "**They do not form one corner**"
    s.blocks.append(Figure(
        "phase3_grid.png",
        f"Final validation loss of the 5 x 4 grid (cross-entropy, constant learning rate, plain momentum). "
        f"{len(div)} of {len(r['grid'])} runs diverged ({div_text}), detected by the code: the training loop "
        f"stopped them (loss NaN, infinite or 50 times its start) or they ended no better than the untrained "
        f"network (validation loss {num(r['grid_start_val_loss'])}). {corner} (red outline): raising either the "
        f"learning rate or the momentum of a diverged run never rescues it. Best: lr {b['lr']:g} with β "
        f"{b['momentum']:g}, loss {num(b['val_loss'])}, accuracy {pct(b['val_accuracy'])}."))
    s.blocks.append(Figure(
        "phase3_curves.png",
        "The training loss, step by step, of every cell. Too small a learning rate crawls (the top curves "
        "at β = 0); momentum speeds the same learning rate up; past a point the loss shoots up within the first "
        "steps and the loop stops the run, or it climbs back to the untrained network's level and stays there "
        "(x: diverged)."))
    def cell(c: dict[str, Any]) -> str:
        end = "diverged" if c["diverged"] else f"ends at {num(c['val_loss'])}"
        return f"lr {c['lr']:g} with β {c['momentum']:g} {end}"

    groups = "; ".join(f"effective {num(gr['effective_lr'])}: " + ", ".join(cell(c) for c in gr["cells"])
                       for gr in r["equal_effective_lr"])
    pairs = [(m, p) for gr in r["equal_effective_lr"] for p in gr["cells"] if p["momentum"] == 0.0
             for m in gr["cells"] if 0.0 < m["momentum"] < 0.99]
    better = sum(not m["diverged"] and (p["diverged"] or m["val_loss"] < p["val_loss"]) for m, p in pairs)
    verdict = (f"Against plain SGD with the same lr/(1-β), the run with momentum 0.5 or 0.9 (and a smaller lr) ends "
               f"lower in {better} of {len(pairs)} cases: along the steady directions it takes the same large step, "
               f"along the steep ones it keeps the small raw lr and oscillates less." if pairs else "")
    lim = r["momentum_stable_lr_lambda"]
    s.blocks.append(Figure(
        "phase3_momentum.png",
        f"Why momentum is a larger step, and why not simply one. Left: with a steady gradient the velocity "
        f"v ← βv + g grows to g/(1-β), so momentum 0.5, 0.9 and 0.99 multiply the step by 2, 10 and 100 — after "
        f"about 1/(1-β) steps. Middle: across a steep valley the gradient changes sign every step and cancels "
        f"in v, so the largest stable learning rate on a quadratic of curvature λ grows from 2/λ to "
        f"2(1+β)/λ (computed from the iteration matrix: {num(lim['0.0'])}, {num(lim['0.5'])}, {num(lim['0.9'])}, "
        f"{num(lim['0.99'])} for β = 0, 0.5, 0.9, 0.99) instead of shrinking to 2(1-β)/λ as it would if momentum "
        f"were only a bigger learning rate. Right: the measured grid against lr/(1-β). If momentum were nothing "
        f"but a larger learning rate, runs with the same lr/(1-β) would end alike; they do not — {groups}. "
        f"{verdict} β = 0.99 remembers about 100 steps: slow to get going, slow to stop."))
    s.blocks.append(Table(
        ["lr \\ β"] + [f"{m:g}" for m in r["grid_momenta"]],
        [[f"{lr:g}"] + [("**diverged**" if c["diverged"] else f"{num(c['val_loss'])} ({pct(c['val_accuracy'])})")
                        for m in r["grid_momenta"]
                        for c in r["grid"] if c["lr"] == lr and c["momentum"] == m]
         for lr in r["grid_lrs"]]))
    return s


__all__ = ["RecordingLoss", "dense_spec", "diverged", "is_corner", "run", "section", "smooth", "train_dense"]
