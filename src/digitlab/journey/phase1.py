"""Phase 1 — neurons: one neuron and one dense layer, written twice.

A neuron computes ``z = sum_i x_i w_i + b``; a dense layer is ``d_out`` neurons sharing the input,
and a batch is ``N`` inputs at once: ``Z = X W + b`` with ``X: (N, d_in)``, ``W: (d_in, d_out)``
(the convention of `digitlab.nn.Dense`), ``b: (d_out,)`` broadcast over the rows, ``Z: (N, d_out)``.

We write it first as Python loops over lists — every multiply-add visible — and then as one NumPy
expression, and check that both give the same numbers (max abs difference < 1e-9 in float64: only
the order of the additions differs). Then we time both against the layer width and the batch size:
the loop costs ``N * d_in * d_out`` interpreted multiply-adds, NumPy hands the same work to
compiled BLAS, and the gap is why everything later in digitlab is vectorised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.journey.report import Figure, Section, num, plain, plt, provenance, write_json

TOL = 1e-9  # float64: loops and BLAS differ only in summation order


# --- one neuron -------------------------------------------------------------------------------------

def neuron_loop(x: list[float], w: list[float], b: float) -> float:
    """``z = sum_i x_i w_i + b`` one multiply-add at a time (the definition, nothing hidden)."""
    z = b
    for xi, wi in zip(x, w, strict=True):
        z += xi * wi
    return z


def neuron_numpy(x: np.ndarray, w: np.ndarray, b: float) -> float:
    """The same neuron as a dot product."""
    return float(x @ w + b)


# --- one dense layer over a batch ---------------------------------------------------------------------

def dense_loop(X: list[list[float]], W: list[list[float]], b: list[float]) -> list[list[float]]:
    """``Z[n][j] = b[j] + sum_i X[n][i] W[i][j]``: a neuron per output j, for every sample n.

    ``W`` is indexed ``[i][j]`` = (input, output), as `digitlab.nn.Dense`.
    """
    d_in, d_out = len(W), len(b)
    Z = []
    for row in X:
        if len(row) != d_in:
            raise ValueError(f"sample has {len(row)} features, W expects {d_in}")
        out = []
        for j in range(d_out):
            z = b[j]
            for i in range(d_in):
                z += row[i] * W[i][j]
            out.append(z)
        Z.append(out)
    return Z


def dense_numpy(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``Z = X @ W + b`` — one matrix product, the bias broadcast over the batch."""
    return X @ W + b


# --- experiment ---------------------------------------------------------------------------------------

def best_time(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Best of ``repeats`` wall-clock runs with `time.perf_counter`: the minimum is the least disturbed
    by other processes, which matters on a shared machine."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _time_layer(rng: np.random.Generator, n: int, d_in: int, d_out: int) -> dict[str, float]:
    X = rng.standard_normal((n, d_in))
    W = rng.standard_normal((d_in, d_out))
    b = rng.standard_normal(d_out)
    Xl, Wl, bl = X.tolist(), W.tolist(), b.tolist()
    loop = best_time(lambda: dense_loop(Xl, Wl, bl))
    vec = best_time(lambda: dense_numpy(X, W, b))
    diff = float(np.max(np.abs(np.asarray(dense_loop(Xl, Wl, bl)) - dense_numpy(X, W, b))))
    return {"batch": n, "width": d_out, "d_in": d_in, "loop_s": loop, "numpy_s": vec,
            "speedup": loop / max(vec, 1e-12), "max_abs_diff": diff}


def check_equal(rng: np.random.Generator, n: int = 16, d_in: int = 32, d_out: int = 24) -> dict[str, float]:
    """Loops and NumPy on the same float64 data: returns the max abs differences (neuron, layer)."""
    x = rng.standard_normal(d_in)
    w = rng.standard_normal(d_in)
    b = float(rng.standard_normal())
    neuron_diff = abs(neuron_loop(x.tolist(), w.tolist(), b) - neuron_numpy(x, w, b))
    X = rng.standard_normal((n, d_in))
    W = rng.standard_normal((d_in, d_out))
    bv = rng.standard_normal(d_out)
    layer_diff = float(np.max(np.abs(np.asarray(dense_loop(X.tolist(), W.tolist(), bv.tolist()))
                                     - dense_numpy(X, W, bv))))
    assert neuron_diff < TOL and layer_diff < TOL, (neuron_diff, layer_diff)
    return {"neuron": neuron_diff, "layer": layer_diff}


def plot_timing(width_rows: list[dict[str, float]], batch_rows: list[dict[str, float]], path: Path) -> None:
    """Log-log time against width (fixed batch) and against batch (fixed width), speed-up annotated."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, rows, key, fixed in ((axes[0], width_rows, "width", "batch"), (axes[1], batch_rows, "batch", "width")):
        xs = [r[key] for r in rows]
        ax.loglog(xs, [r["loop_s"] for r in rows], "o-", label="Python loops")
        ax.loglog(xs, [r["numpy_s"] for r in rows], "s-", label="NumPy (X @ W + b)")
        for r in rows:
            ax.annotate(f"x{r['speedup']:.0f}", (r[key], r["numpy_s"]), textcoords="offset points",
                        xytext=(0, 8), ha="center", fontsize=8)
        ax.set_xlabel(f"layer {key}" + (" (d_out = d_in)" if key == "width" else ""))
        ax.set_ylabel("seconds (best of 3)")
        ax.set_title(f"time vs {key} ({fixed} = {rows[0][fixed]})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("One dense layer: loops vs NumPy (annotations: speed-up)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_shapes(path: Path, n: int = 4, d_in: int = 3, d_out: int = 2) -> None:
    """``X (N, d_in) @ W (d_in, d_out) + b (d_out,) = Z (N, d_out)`` as rectangles scaled to the shapes,
    so the matching inner dimension and the broadcast of b are visible."""
    fig, ax = plt.subplots(figsize=(9, 3.4))
    u = 0.5  # size of one entry
    x0, y_top = 0.0, n * u

    def box(x: float, rows: int, cols: int, label: str, color: str) -> float:
        h, w = rows * u, cols * u
        y = y_top - h
        ax.add_patch(plt.Rectangle((x, y), w, h, facecolor=color, edgecolor="black"))
        for r in range(1, rows):
            ax.plot([x, x + w], [y + r * u] * 2, color="black", lw=0.3)
        for c in range(1, cols):
            ax.plot([x + c * u] * 2, [y, y + h], color="black", lw=0.3)
        ax.text(x + w / 2, y - 0.3, label, ha="center", va="top", fontsize=10)
        return x + w

    def sign(x: float, s: str) -> float:
        ax.text(x + 0.35, y_top - n * u / 2, s, ha="center", va="center", fontsize=18)
        return x + 0.7

    x = box(x0, n, d_in, f"X\n(N, d_in) = ({n}, {d_in})", "#9ecae1")
    x = sign(x, "@")
    x = box(x, d_in, d_out, f"W\n(d_in, d_out) = ({d_in}, {d_out})", "#fdae6b")
    x = sign(x, "+")
    x = box(x, 1, d_out, f"b\n(d_out,) = ({d_out},)\nbroadcast over N", "#a1d99b")
    x = sign(x, "=")
    x = box(x, n, d_out, f"Z = XW + b\n(N, d_out) = ({n}, {d_out})", "#bcbddc")
    ax.set_xlim(-0.3, x + 0.3)
    ax.set_ylim(-1.6, y_top + 0.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("Shapes of a dense layer: inner dimensions (d_in) must match")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(out_dir: Path, quick: bool = False, seed: int = 0, command: str | None = None) -> dict[str, Any]:
    """Check loops == NumPy, time both against width and batch, write the figures and ``phase1.json``.

    ``quick`` uses a few small sizes (seconds on one core) so tests can run it; the full run goes up to
    width 512 and batch 256, where the loop takes tens of seconds.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    diffs = check_equal(rng)
    if quick:
        widths, width_batch = [4, 16, 48], 8
        batches, batch_width = [2, 8, 32], 16
    else:
        widths, width_batch = [8, 32, 128, 512], 32
        batches, batch_width = [4, 16, 64, 256], 128
    width_rows = [_time_layer(rng, width_batch, w, w) for w in widths]
    batch_rows = [_time_layer(rng, n, batch_width, batch_width) for n in batches]
    max_diff = max([diffs["neuron"], diffs["layer"]] + [r["max_abs_diff"] for r in width_rows + batch_rows])
    assert max_diff < TOL, max_diff
    plot_timing(width_rows, batch_rows, out_dir / "phase1_timing.png")
    plot_shapes(out_dir / "phase1_shapes.png")
    largest = max(width_rows + batch_rows, key=lambda r: r["batch"] * r["d_in"] * r["width"])
    result = plain({
        **provenance(1, quick, seed, out_dir, command, t0),
        "max_abs_diff": max_diff, "max_abs_diff_neuron": diffs["neuron"], "max_abs_diff_layer": diffs["layer"],
        "tolerance": TOL,
        "widths": widths, "width_batch": width_batch, "batches": batches, "batch_width": batch_width,
        "timing_by_width": width_rows, "timing_by_batch": batch_rows,
        "speedup_by_width": {str(r["width"]): r["speedup"] for r in width_rows},
        "speedup_by_batch": {str(r["batch"]): r["speedup"] for r in batch_rows},
        "largest": largest, "speedup_largest": largest["speedup"],
        "figures": ["phase1_timing.png", "phase1_shapes.png"],
    })
    write_json(out_dir / "phase1.json", result)
    return result


def section(r: dict[str, Any]) -> Section:
    """The report's text for phase 1, from ``phase1.json``."""
    big = r["largest"]
    w, b = r["timing_by_width"], r["timing_by_batch"]
    s = Section("Phase 1 — neurons: loops and NumPy")
    s.blocks.append(
        f"One neuron is `z = sum_i x_i w_i + b`; a dense layer is d_out neurons sharing the input, and a batch is "
        f"N inputs at once: `Z = X W + b`. `digitlab.journey.phase1` writes it twice, as Python loops over "
        f"lists (every multiply-add visible) and as one NumPy expression. On the same float64 data the two agree "
        f"to {r['max_abs_diff']:.1e} (largest absolute difference over every size timed; the tolerance is "
        f"{r['tolerance']:g}) — only the order of the additions differs.")
    s.blocks.append(Figure(
        "phase1_timing.png",
        f"Time of one layer against its width (d_in = d_out, batch {r['width_batch']}) and against the batch "
        f"(width {r['batch_width']}), log-log, best of 3. The loop does N x d_in x d_out interpreted multiply-adds, "
        f"so its line rises with slope 2 against the width and slope 1 against the batch: from width {w[0]['width']} "
        f"to {w[-1]['width']} it goes from {num(w[0]['loop_s'])} s to {num(w[-1]['loop_s'])} s. NumPy hands the "
        f"same work to compiled BLAS: at the largest size (batch {big['batch']}, {big['d_in']} x {big['width']}) it "
        f"is {r['speedup_largest']:,.0f} times faster ({num(big['loop_s'])} s against {num(big['numpy_s'])} s); "
        f"at the smallest the gap is only {w[0]['speedup']:,.0f}x and {b[0]['speedup']:,.0f}x, because calling "
        f"NumPy has a fixed cost of microseconds. That gap is why everything later in digitlab is vectorised."))
    s.blocks.append(Figure(
        "phase1_shapes.png",
        "The shapes of a dense layer, drawn to scale for N = 4, d_in = 3, d_out = 2: the inner dimension d_in "
        "of X and W must match and disappears in the product; b has one entry per output and is broadcast "
        "over the N rows; Z has a row per sample and a column per neuron. `digitlab.nn.Dense` stores W as "
        "(d_in, d_out) for exactly this reason."))
    return s


__all__ = ["check_equal", "dense_loop", "dense_numpy", "neuron_loop", "neuron_numpy", "run", "section"]
