"""Phase 4 — the dense net's blind spot: it does not know which pixels are neighbours.

1. **A fixed random permutation of the 784 pixels**, the same for every image, training and test. To
   a dense net this changes nothing: its first layer ``x W`` is a sum over pixels, and permuting the
   pixels only permutes the rows of ``W`` that it will learn. It learns the scrambled digits as well as
   the real ones — and if its first layer starts with the matching rows permuted, the two runs are the
   same computation, step for step, up to rounding (`equivariant_dense`). A CNN's 3x3 kernels and
   pooling assume that neighbouring pixels belong together; scrambled, they no longer do, and its
   accuracy drops.
2. **Translation.** Both nets, trained on unshifted digits, read the test digits shifted by 0-6 pixels
   (in each of the four directions, empty pixels filled with background). The dense net has a
   separate weight for every pixel position and drops fast; the convolutions share their weights over
   positions and max-pooling forgives small moves, so the CNN holds up longer.
3. **Parameters.** Weight sharing is also why the CNN needs fewer parameters: a 3x3 kernel has 9
   weights wherever it looks, a dense neuron has one per pixel.

Both nets are trained with the `digitlab train` recipe (`experiment.train_recipe`) on the same images
for the same epochs, each at its default learning rate (dense 0.1, CNN 0.05).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.journey.experiment import BLAS_THREADS, RECIPE, Subsets, blas_threads, mnist_subsets, train_recipe
from digitlab.journey.report import Figure, Section, Table, pct, plain, plt, provenance, pts, write_json
from digitlab.models import build, cnn_spec, mlp_spec
from digitlab.nn import Dense, Sequential, evaluate

SIZES = {
    True: {"train": 6000, "test": 5000, "translation_test": 1000, "epochs": 2},
    False: {"train": 20000, "test": 10000, "translation_test": 2000, "epochs": 3},
}
SHIFTS = tuple(range(7))
LR = {"dense": 0.1, "cnn": 0.05}


def specs(quick: bool) -> dict[str, dict[str, Any]]:
    """The dense net of `digitlab train --arch mlp` and the default CNN; quick mode thins the CNN to
    8 and 16 channels (a few seconds per epoch on 6,000 images instead of half a minute)."""
    cnn = cnn_spec(channels=(8, 16), hidden=64) if quick else cnn_spec()
    return {"dense": mlp_spec(hidden=(256, 128), dropout=0.2), "cnn": cnn}


def pixel_permutation(seed: int, size: int = 28 * 28) -> np.ndarray:
    return np.random.default_rng([seed, 4]).permutation(size)


def permute(x: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """The same pixel shuffle for every image: ``out.flat[k] = x.flat[perm[k]]`` per image."""
    return np.ascontiguousarray(x.reshape(len(x), -1)[:, perm].reshape(x.shape))


def first_dense(model: Sequential) -> Dense:
    return next(layer for layer in model.layers if isinstance(layer, Dense))


def equivariant_dense(spec: dict[str, Any], perm: np.ndarray, seed: int, dtype: type = np.float32) -> Sequential:
    """The dense net for permuted inputs whose first layer starts as the unpermuted net's, rows
    rearranged: ``x[perm] @ W[perm] = x @ W``, and the gradient ``x[perm]^T G = (x^T G)[perm]`` keeps
    it so at every step."""
    model = build(spec, seed=seed, dtype=dtype)
    layer = first_dense(model)
    layer.params["W"][...] = layer.params["W"][perm]
    return model


def equivariance_check(spec: dict[str, Any], data: Subsets, perm: np.ndarray, epochs: int, seed: int
                       ) -> dict[str, float]:
    """Train the dense net on the original pixels and, from the rearranged start, on the permuted ones,
    in float64 (so that the only difference, the order of the 784 additions, stays at rounding level)
    and compare their test logits."""
    x, xt = data.x_train.astype(np.float64), data.x_test.astype(np.float64)
    a, _ = train_recipe(spec, x, data.y_train, epochs=epochs, lr=LR["dense"], seed=seed,
                        model=build(spec, seed=seed, dtype=np.float64))
    b, _ = train_recipe(spec, permute(x, perm), data.y_train, epochs=epochs, lr=LR["dense"], seed=seed,
                        model=equivariant_dense(spec, perm, seed, np.float64))
    la, lb = a.predict_logits(xt), b.predict_logits(permute(xt, perm))
    return {"equivariant_max_logit_diff": float(np.max(np.abs(la - lb))),
            "equivariant_max_logit": float(np.max(np.abs(la))),
            "equivariant_same_predictions": float(np.mean(la.argmax(1) == lb.argmax(1))),
            "equivariant_accuracy": [float(np.mean(la.argmax(1) == data.y_test)),
                                     float(np.mean(lb.argmax(1) == data.y_test))]}


def shift(x: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Move images ``(N, 1, H, W)`` by ``dx`` pixels right and ``dy`` down, filling with 0 (paper)."""
    out = np.zeros_like(x)
    h, w = x.shape[2:]
    src_y, dst_y = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    src_x, dst_x = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[:, :, dst_y, dst_x] = x[:, :, src_y, src_x]
    return out


def translation_accuracy(model: Sequential, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy at each shift, the mean over the four directions (right, left, down, up)."""
    acc = {}
    for k in SHIFTS:
        dirs = [(0, 0)] if k == 0 else [(k, 0), (-k, 0), (0, k), (0, -k)]
        acc[str(k)] = float(np.mean([evaluate(model, shift(x, dx, dy), y)[1] for dx, dy in dirs]))
    return acc


def param_table(model: Sequential) -> list[dict[str, Any]]:
    """Parameters of each layer that has any."""
    return [{"layer": i, "type": type(layer).__name__, "params": int(sum(p.size for p in layer.params.values())),
             "shapes": {k: list(v.shape) for k, v in layer.params.items()}}
            for i, layer in enumerate(model.layers) if layer.params]


def experiment(data: Subsets, sz: dict[str, int], quick: bool, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    perm = pixel_permutation(seed)
    sp = specs(quick)
    x, y = data.x_train, data.y_train
    xp, xtp = permute(x, perm), permute(data.x_test, perm)
    models, acc, secs = {}, {}, {}
    for name in ("dense", "cnn"):
        for permuted in (False, True):
            t = time.perf_counter()
            m, _ = train_recipe(sp[name], xp if permuted else x, y, epochs=sz["epochs"], lr=LR[name], seed=seed)
            key = f"{name}_{'permuted' if permuted else 'original'}"
            secs[key] = time.perf_counter() - t
            models[key] = m
            acc[key] = evaluate(m, xtp if permuted else data.x_test, data.y_test)[1]
    nt = sz["translation_test"]
    trans = {name: translation_accuracy(models[f"{name}_original"], data.x_test[:nt], data.y_test[:nt])
             for name in ("dense", "cnn")}
    drop = {name: acc[f"{name}_original"] - acc[f"{name}_permuted"] for name in ("dense", "cnn")}
    result = {
        "accuracy": acc, "drop": drop, "train_seconds": secs,
        "dense_within_1_point": abs(drop["dense"]) <= 0.01, "cnn_drop_larger": drop["cnn"] > drop["dense"],
        **equivariance_check(sp["dense"], data, perm, sz["epochs"], seed),
        "translation_shifts": list(SHIFTS), "translation_accuracy": trans,
        "params": {name: models[f"{name}_original"].num_params() for name in ("dense", "cnn")},
        "params_full_cnn": build(cnn_spec()).num_params(),
        "param_layers": {name: param_table(models[f"{name}_original"]) for name in ("dense", "cnn")},
        "cnn_channels": [layer["shapes"]["W"][0] for layer in param_table(models["cnn_original"])
                         if layer["type"] == "Conv2D"],
        "permutation_seed": [seed, 4], "learning_rates": LR, "recipe": RECIPE,
    }
    return result, {"perm": perm, "models": models}


def plot_permutation(r: dict[str, Any], data: Subsets, perm: np.ndarray, path: Path) -> None:
    fig = plt.figure(figsize=(11, 3.8))
    grid = fig.add_gridspec(2, 7, width_ratios=[1] * 5 + [0.25, 3.6])
    for i in range(5):
        for row, img in enumerate((data.x_test[i, 0], permute(data.x_test[i:i + 1], perm)[0, 0])):
            ax = fig.add_subplot(grid[row, i])
            ax.imshow(img, cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel("original" if row == 0 else "permuted", fontsize=9)
    ax = fig.add_subplot(grid[:, 6])
    names = ["dense", "cnn"]
    w = 0.38
    for k, (kind, color) in enumerate((("original", "tab:blue"), ("permuted", "tab:red"))):
        vals = [100 * r["accuracy"][f"{n}_{kind}"] for n in names]
        bars = ax.bar(np.arange(2) + (k - 0.5) * w, vals, w, color=color, label=f"{kind} pixels")
        for b, v in zip(bars, vals, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.5, f"{v:.1f}", ha="center", fontsize=9)
    lo = min(100 * v for v in r["accuracy"].values())
    ax.set_ylim(max(0, lo - 10), 100)
    ax.set_xticks(range(2), [f"dense net\n{-100 * r['drop']['dense']:+.2f} pts",
                             f"CNN\n{-100 * r['drop']['cnn']:+.2f} pts"])
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Test accuracy", fontsize=10)
    fig.suptitle("One fixed shuffle of the 784 pixels, the same for every image (left: 5 test digits)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_translation(r: dict[str, Any], data: Subsets, path: Path) -> None:
    fig = plt.figure(figsize=(11, 4.6))
    grid = fig.add_gridspec(2, len(SHIFTS), height_ratios=[1, 3.2])
    digit = data.x_test[:1]
    for k in SHIFTS:
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(shift(digit, k, 0)[0, 0], cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{k} px", fontsize=8)
    ax = fig.add_subplot(grid[1, :])
    for name, label, style in (("dense", "dense net", "o-"), ("cnn", "CNN", "s-")):
        acc = r["translation_accuracy"][name]
        ax.plot(SHIFTS, [100 * acc[str(k)] for k in SHIFTS], style, label=f"{label} ({r['params'][name]:,} params)")
    ax.axhline(10, color="gray", ls=":", lw=1)
    ax.text(SHIFTS[-1], 11, "chance", ha="right", fontsize=8, color="gray")
    ax.set_xlabel("shift of the test digits in pixels (mean of right, left, down, up)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    fig.suptitle("Trained on centred digits, tested on shifted ones")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(out_dir: Path, quick: bool = False, seed: int = 0, command: str | None = None) -> dict[str, Any]:
    """The permutation and translation experiments; writes ``phase4_permutation.png``,
    ``phase4_translation.png`` and ``phase4.json``.

    Full run: 20,000 training images, 3 epochs, the default CNN (32/64 channels); quick: 6,000 images,
    2 epochs and a CNN of 8/16 channels.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sz = SIZES[quick]
    with blas_threads():
        data = mnist_subsets(sz["train"], 1, sz["test"])
        result, extra = experiment(data, sz, quick, seed)
    plot_permutation(result, data, extra["perm"], out_dir / "phase4_permutation.png")
    plot_translation(result, data, out_dir / "phase4_translation.png")
    result.update({"sizes": sz, "blas_threads": BLAS_THREADS,
                   "figures": ["phase4_permutation.png", "phase4_translation.png"]})
    result.update(provenance(4, quick, seed, out_dir, command, t0))
    result = plain(result)
    write_json(out_dir / "phase4.json", result)
    return result


def section(r: dict[str, Any]) -> Section:
    """The report's text for phase 4, from ``phase4.json``."""
    sz, a, d = r["sizes"], r["accuracy"], r["drop"]
    s = Section("Phase 4 — the dense net's blind spot")
    ch = "/".join(str(c) for c in r["cnn_channels"])
    s.blocks.append(
        f"Both nets trained on the first {sz['train']:,} training images for {sz['epochs']} epochs with the "
        f"`digitlab train` recipe (SGD, Nesterov momentum 0.9, cosine schedule, weight decay 5e-4, batch 128; "
        f"lr {r['learning_rates']['dense']:g} for the dense net 784-256-128-10 with dropout 0.2, "
        f"{r['learning_rates']['cnn']:g} for the CNN with {ch} channels), tested on {sz['test']:,} test images.")
    verdict = ("within 1 point" if r["dense_within_1_point"] else "**more than 1 point apart**")
    s.blocks.append(Figure(
        "phase4_permutation.png",
        f"Every image's pixels shuffled by one fixed permutation (top: what we see, bottom: what the nets get). "
        f"The dense net: {pct(a['dense_original'], 2)} on the original pixels, {pct(a['dense_permuted'], 2)} on the "
        f"permuted ones (change {pts(-d['dense'], 2)}, {verdict}): it never knew which pixels were "
        f"neighbours. Started with its first layer's rows permuted to match, the permuted run is the original one "
        f"in disguise: trained "
        f"both ways in float64, their test logits (up to {r['equivariant_max_logit']:.1f} in size) differ by at most "
        f"{r['equivariant_max_logit_diff']:.1e} — rounding, as the 784 products are added in another order — and "
        f"they agree on {pct(r['equivariant_same_predictions'], 2)} of the test images. The CNN: "
        f"{pct(a['cnn_original'], 2)} on the original pixels, {pct(a['cnn_permuted'], 2)} permuted "
        f"(change {pts(-d['cnn'], 2)}): its 3x3 kernels and pooling assume that pixels near each other belong "
        f"together, and after the shuffle they do not. Its lead over the dense net, "
        f"{pts(a['cnn_original'] - a['dense_original'], 2)} on the real pixels, is "
        f"{pts(a['cnn_permuted'] - a['dense_permuted'], 2)} on the shuffled ones: what the CNN knows beyond the "
        f"dense net is where pixels are."))
    td, tc = r["translation_accuracy"]["dense"], r["translation_accuracy"]["cnn"]
    s.blocks.append(Figure(
        "phase4_translation.png",
        f"The same two nets (trained on the original, centred digits) on {sz['translation_test']:,} test digits "
        f"shifted 0-6 pixels. At 2 pixels the dense net reads {pct(td['2'])} and the CNN {pct(tc['2'])}; at 4 "
        f"pixels {pct(td['4'])} and {pct(tc['4'])}; at 6 pixels {pct(td['6'])} and {pct(tc['6'])}. A dense "
        f"neuron has a separate weight for every position, so a stroke that moves lands on weights that never "
        f"saw it; a convolution applies the same kernel everywhere and max-pooling forgives a pixel or two. "
        f"Neither is fully invariant: the CNN's last feature map is still flattened into a dense layer "
        f"(the shipped model is also trained on shifted copies, `--augment`, for that reason)."))
    rows = []
    for name, label in (("dense", "dense net"), ("cnn", f"CNN ({ch} channels)")):
        layers = ", ".join(f"{x['type']} {x['params']:,}" for x in r["param_layers"][name])
        rows.append([label, f"{r['params'][name]:,}", layers])
    s.blocks.append(Table(["model", "parameters", "by layer"], rows))
    first = r["param_layers"]["dense"][0]
    conv1 = r["param_layers"]["cnn"][0]
    s.blocks.append(
        f"The dense net's first layer alone has {first['params']:,} parameters: one weight per pixel per "
        f"neuron. The CNN's first convolution has {conv1['params']:,}: {conv1['shapes']['W'][0]} kernels of 3x3, "
        f"each used at every position." + (
            f" The default CNN has fewer parameters than the dense net ({r['params']['cnn']:,} against "
            f"{r['params']['dense']:,}) and is {pts(a['cnn_original'] - a['dense_original'], 2)} more accurate here."
            if r["params"]["cnn"] == r["params_full_cnn"] else
            f" (The default CNN with 32/64 channels, used by the full run, has {r['params_full_cnn']:,}.)"))
    return s


__all__ = ["equivariant_dense", "permute", "pixel_permutation", "run", "section", "shift", "translation_accuracy"]
