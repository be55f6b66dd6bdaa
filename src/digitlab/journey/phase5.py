"""Phase 5 — inside the CNN: what it learned, what it sees, where it fails, and what NumPy costs.

The model is the shipped one, ``models/digitlab-cnn10.npz`` (the default CNN trained with
augmentation: `digitlab train --arch cnn --augment --epochs 15`), so the figures show the network that
the recogniser actually runs; without it (a copy of the package without ``models/``) a CNN is trained
here with the `digitlab train` recipe and the report says so.

1. **First-layer filters**: the 3x3 kernels that look at the pixels (after training they are edge and
   stroke detectors: a positive and a negative side).
2. **Feature maps** of one test digit after every ReLU of the convolutional part: the maps shrink
   (26 -> 12 -> 10 -> 4 pixels) while the channels grow (32 -> 64), from strokes to parts of digits.
3. **Confusion matrix** and the **most confident mistakes** on the test set.
4. **NumPy vs PyTorch** time and accuracy. The times are *read* from the benchmark JSON in
   ``docs/bench/`` and the model cards in ``models/`` (each side of a benchmark ran in its own process,
   alternating, the way `digitlab.bench.harness` explains: two frameworks in one process fight over
   threads and caches). This phase does not import PyTorch; what it measures itself is accuracy, with
   NumPy, of both the NumPy-trained and the PyTorch-trained weights.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.data.mnist import repo_root
from digitlab.journey.experiment import BLAS_THREADS, blas_threads, mnist_subsets, train_recipe
from digitlab.journey.report import Figure, Section, Table, num, pct, plain, plt, provenance, write_json
from digitlab.models import cnn_spec
from digitlab.nn import Conv2D, ReLU, Sequential, confusion_matrix, evaluate, load, softmax

SIZES = {True: {"test": 1000, "fallback_train": 3000, "fallback_epochs": 2},
         False: {"test": 10000, "fallback_train": 20000, "fallback_epochs": 3}}
SHIPPED = "models/digitlab-cnn10.npz"
TORCH_MODEL = "models/digitlab-cnn-torch.npz"
SOURCES = {"numpy_card": "models/digitlab-cnn10.json", "torch_card": "models/digitlab-cnn-torch.json",
           "bench_cnn_train": "docs/bench/bench_cnn-train.json",
           "bench_torch_train": "docs/bench/bench_torch-train.json", "bench_infer": "docs/bench/bench_infer.json"}
DIGIT_INDEX = 0  # the first test image (a 7) walks through the layers
MISTAKES = 12


def get_model(root: Path, quick: bool, seed: int, sz: dict[str, int]) -> tuple[Sequential, str]:
    """The shipped model, or one trained here when it is not there."""
    path = root / SHIPPED
    if path.is_file():
        return load(path), SHIPPED
    spec = cnn_spec(channels=(8, 16), hidden=64) if quick else cnn_spec()
    data = mnist_subsets(sz["fallback_train"], 1, 1)
    model, _ = train_recipe(spec, data.x_train, data.y_train, epochs=sz["fallback_epochs"], lr=0.05, seed=seed)
    return model, f"trained here: {sz['fallback_train']:,} images, {sz['fallback_epochs']} epochs (no {SHIPPED})"


def activations(model: Sequential, x: np.ndarray) -> list[tuple[str, np.ndarray, int]]:
    """The output of every ReLU that still has spatial maps (4-D), named by the layers that made it,
    with its receptive field: how many input pixels across one of its values can see (a KxK window
    adds ``(K - 1) * jump``, where ``jump`` is the product of the strides so far)."""
    out, pending, rf, jump = [], [], 1, 1
    for i, layer in enumerate(model.layers):
        x = layer.forward(x, training=False)
        pending.append(type(layer).__name__)
        if hasattr(layer, "kernel_size"):
            rf += (layer.kernel_size[0] - 1) * jump
            jump *= layer.stride[0]
        if isinstance(layer, ReLU) and x.ndim == 4:
            out.append((f"after layer {i} ({'-'.join(p for p in pending if p != 'ReLU')}-ReLU)", x.copy(), rf))
            pending = []
    return out


def plot_filters(model: Sequential, path: Path) -> dict[str, Any]:
    conv = next(layer for layer in model.layers if isinstance(layer, Conv2D))
    W = conv.params["W"][:, 0]  # (F, KH, KW): the input is one grey channel
    f = len(W)
    cols = 8
    rows = -(-f // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.2 + 0.6))
    lim = float(np.abs(W).max())
    for k, ax in enumerate(np.ravel(axes)):
        ax.set_xticks([])
        ax.set_yticks([])
        if k < f:
            ax.imshow(W[k], cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title(str(k), fontsize=7)
        else:
            ax.axis("off")
    fig.suptitle(f"The {f} first-layer 3x3 kernels (red +, blue -, one colour scale ±{lim:.2f})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    # a kernel is an edge/stroke detector when it has both signs with some weight
    pos = (W > 0.1 * lim).any(axis=(1, 2))
    neg = (W < -0.1 * lim).any(axis=(1, 2))
    return {"filters": f, "filter_shape": list(conv.params["W"].shape), "filters_both_signs": int(np.sum(pos & neg)),
            "filter_abs_max": lim}


def plot_feature_maps(model: Sequential, x: np.ndarray, label: int, path: Path, per_stage: int = 8) -> dict[str, Any]:
    acts = activations(model, x)
    probs = softmax(model.forward(x, training=False).astype(np.float64))[0]
    fig = plt.figure(figsize=(1.25 * (per_stage + 2), 1.45 * len(acts) + 1.3))
    grid = fig.add_gridspec(len(acts) + 1, per_stage + 2, width_ratios=[2.2] + [1] * per_stage + [0.1],
                            height_ratios=[1] * len(acts) + [0.7])
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(x[0, 0], cmap="gray_r")
    ax.set_title(f"input 28x28\n(label {label})", fontsize=9)
    ax.axis("off")
    stages = []
    for row, (name, a, rf) in enumerate(acts):
        maps = a[0]
        # the channels with the most structure (spatial spread), not the most mean activity: after
        # BatchNorm some channels are simply "on" over the background
        order = np.argsort(-maps.std(axis=(1, 2)))[:per_stage]
        vmax = float(maps[order].max()) or 1.0
        for col, ch in enumerate(order):
            ax = fig.add_subplot(grid[row, col + 1])
            ax.imshow(maps[ch], cmap="magma", vmin=0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"ch {ch}", fontsize=7)
            if col == 0:
                ax.set_ylabel(f"{maps.shape[0]} x {maps.shape[1]}x{maps.shape[2]}", fontsize=8)
        stages.append({"name": name, "shape": list(maps.shape), "active_fraction": float(np.mean(maps > 0)),
                       "receptive_field": rf,
                       "shown_channels": order.tolist()})
    ax = fig.add_subplot(grid[len(acts), 1:per_stage + 1])
    ax.bar(range(len(probs)), probs, color=["tab:green" if k == probs.argmax() else "tab:gray" for k in range(10)])
    ax.set_xticks(range(len(probs)))
    ax.set_ylim(0, 1)
    ax.set_ylabel("p", fontsize=8)
    ax.set_title(f"output: p({probs.argmax()}) = {probs.max():.4f}", fontsize=8)
    fig.suptitle("One digit through the convolutional layers (rows: after each ReLU; the 8 channels with the most "
                 "structure)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"feature_digit_index": DIGIT_INDEX, "feature_digit_label": label, "feature_stages": stages,
            "feature_prediction": int(probs.argmax()), "feature_probability": float(probs.max())}


def plot_confusion(conf: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.6, 5.6))
    off = conf.astype(float).copy()
    np.fill_diagonal(off, np.nan)
    cmap = plt.get_cmap("Reds").copy()
    cmap.set_bad("#e8f4e8")
    im = ax.imshow(off, cmap=cmap, vmin=0, vmax=max(1.0, float(np.nanmax(off))))
    for t in range(conf.shape[0]):
        for p in range(conf.shape[1]):
            v = conf[t, p]
            if t == p:
                ax.text(p, t, str(v), ha="center", va="center", fontsize=7, color="darkgreen", fontweight="bold")
            elif v:
                ax.text(p, t, str(v), ha="center", va="center", fontsize=8,
                        color="white" if v > 0.6 * np.nanmax(off) else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, label="errors (off the diagonal)")
    errors = int(conf.sum() - np.trace(conf))
    ax.set_title(f"Confusion matrix, {conf.sum():,} test images, {errors} errors (green: right)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_mistakes(x: np.ndarray, y: np.ndarray, probs: np.ndarray, path: Path) -> list[dict[str, Any]]:
    """The misread test images that the model was surest about (highest probability of its answer)."""
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    worst = wrong[np.argsort(-probs[wrong, pred[wrong]])][:MISTAKES]
    cols = 6
    rows = max(1, -(-len(worst) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.7, rows * 2.0 + 0.4))
    out = []
    for k, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if k < len(worst):
            i = int(worst[k])
            ax.imshow(x[i, 0], cmap="gray_r")
            ax.set_title(f"#{i}: true {y[i]}\nread {pred[i]} (p {probs[i, pred[i]]:.3f})", fontsize=8)
            out.append({"index": i, "true": int(y[i]), "predicted": int(pred[i]),
                        "probability": float(probs[i, pred[i]]), "probability_true": float(probs[i, y[i]])})
    fig.suptitle("The most confident mistakes (test image number, label, answer, its probability)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return out


def _read(root: Path, rel: str) -> dict[str, Any] | None:
    path = root / rel
    return json.loads(path.read_text()) if path.is_file() else None


def numpy_vs_torch(root: Path, measured: dict[str, float | None], n_test: int) -> dict[str, Any]:
    """The comparison table's numbers, each with the file it comes from; a missing file gives None."""
    c = {k: _read(root, v) for k, v in SOURCES.items()}
    nc, tc = c["numpy_card"] or {}, c["torch_card"] or {}
    bt, btt, bi = c["bench_cnn_train"] or {}, c["bench_torch_train"] or {}, c["bench_infer"] or {}

    def per_epoch(card: dict[str, Any]) -> float | None:
        h = card.get("history")
        return card["train_seconds"] / len(h) if h and card.get("train_seconds") else None

    return {
        "sources": SOURCES, "sources_missing": [v for k, v in SOURCES.items() if c[k] is None],
        "numpy_card_test_accuracy": nc.get("test_accuracy"), "torch_card_test_accuracy": tc.get("test_accuracy"),
        "numpy_measured_test_accuracy": measured["numpy"], "torch_measured_test_accuracy": measured["torch"],
        "measured_on": n_test,
        "numpy_train_seconds": nc.get("train_seconds"), "torch_train_seconds": tc.get("train_seconds"),
        "numpy_train_epochs": len(nc.get("history") or []) or None,
        "torch_train_epochs": len(tc.get("history") or []) or None,
        "numpy_seconds_per_epoch": per_epoch(nc), "torch_seconds_per_epoch": per_epoch(tc),
        "numpy_command": nc.get("command"), "torch_command": tc.get("command"),
        "torch_recipe_extras": {k: tc.get(k) for k in ("ema", "label_smoothing")},
        "bench_epoch_numpy_s": bt.get("numpy_epoch_s"), "bench_epoch_torch_s": bt.get("torch_epoch_s"),
        "bench_epoch_torch_channels_last_s": bt.get("torch_channels_last_epoch_s"),
        "bench_epoch_ratio": bt.get("ratio_numpy_over_torch"),
        "bench_epoch_mean_loss": [bt.get("numpy_mean_loss"), bt.get("torch_mean_loss")],
        "bench_epoch_threads": bt.get("threads"), "bench_epoch_images": bt.get("images"),
        "bench_trainer_numpy_s": btt.get("numpy_epoch_s"), "bench_trainer_torch_s": btt.get("torch_cpu_epoch_s"),
        "bench_trainer_ratio": btt.get("ratio_numpy_over_torch_cpu"),
        "bench_infer_numpy_batch256_ms": bi.get("numpy_batch256_ms"),
        "bench_infer_torch_batch256_ms": bi.get("torch_batch256_ms"),
        "bench_infer_numpy_single_ms": bi.get("numpy_single_ms"),
        "bench_infer_torch_single_ms": bi.get("torch_single_ms"),
        "bench_infer_ratio_batch256": bi.get("ratio_numpy_over_torch_batch256"),
        "bench_infer_ratio_single": bi.get("ratio_numpy_over_torch_single"),
        "torch_version": bt.get("torch_version") or tc.get("torch"),
    }


def run(out_dir: Path, quick: bool = False, seed: int = 0, command: str | None = None,
        root: Path | None = None) -> dict[str, Any]:
    """Filters, feature maps, confusion matrix, mistakes and the NumPy/PyTorch table; writes
    ``phase5_filters.png``, ``phase5_features.png``, ``phase5_confusion.png``, ``phase5_mistakes.png``
    and ``phase5.json``. ``root``: where ``models/`` and ``docs/bench/`` are (the checkout).

    Quick mode evaluates on the first 1,000 test images instead of all 10,000.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = Path(root) if root is not None else repo_root()
    sz = SIZES[quick]
    with blas_threads():
        model, source = get_model(root, quick, seed, sz)
        data = mnist_subsets(1, 1, sz["test"])
        x, y = data.x_test, data.y_test
        logits = model.predict_logits(x)
        probs = softmax(logits.astype(np.float64))
        pred = probs.argmax(axis=1)
        acc = float(np.mean(pred == y))
        conf = confusion_matrix(y, pred, 10)
        torch_acc = evaluate(load(root / TORCH_MODEL), x, y)[1] if (root / TORCH_MODEL).is_file() else None
        result: dict[str, Any] = {"model": source, "params": model.num_params(), "test_images": len(y),
                                  "test_accuracy": acc, "errors": int((pred != y).sum()), "confusion": conf,
                                  "per_class_accuracy": np.diag(conf) / np.maximum(conf.sum(axis=1), 1)}
        off = conf.copy()
        np.fill_diagonal(off, 0)
        t, p = np.unravel_index(np.argmax(off), off.shape)
        result["most_confused"] = {"true": int(t), "predicted": int(p), "count": int(off[t, p])}
        result.update(plot_filters(model, out_dir / "phase5_filters.png"))
        result.update(plot_feature_maps(model, x[DIGIT_INDEX:DIGIT_INDEX + 1], int(y[DIGIT_INDEX]),
                                        out_dir / "phase5_features.png"))
        plot_confusion(conf, out_dir / "phase5_confusion.png")
        result["mistakes"] = plot_mistakes(x, y, probs, out_dir / "phase5_mistakes.png")
        result["torch_comparison"] = numpy_vs_torch(root, {"numpy": acc if source == SHIPPED else None,
                                                           "torch": torch_acc}, len(y))
    result.update({"sizes": sz, "blas_threads": BLAS_THREADS,
                   "figures": ["phase5_filters.png", "phase5_features.png", "phase5_confusion.png",
                               "phase5_mistakes.png"]})
    result.update(provenance(5, quick, seed, out_dir, command, t0))
    result = plain(result)
    write_json(out_dir / "phase5.json", result)
    return result


def _s(x: float | None, fmt: str) -> str:
    return "not measured" if x is None else format(x, fmt)


def torch_table(tc: dict[str, Any]) -> Table:
    def acc(v: float | None) -> str:
        return "not measured" if v is None else pct(v, 2)

    def ratio(a: float | None, b: float | None) -> str:
        return "" if a is None or b is None else f"{a / b:.2f}x"

    def given(v: float | None) -> str:  # the benchmark's own ratio: the median of its per-pair ratios
        return "" if v is None else f"{v:.2f}x"

    n = tc["measured_on"]
    rows = [
        ["test accuracy, from the model card (10,000 images)", acc(tc["numpy_card_test_accuracy"]),
         acc(tc["torch_card_test_accuracy"]), ""],
        [f"test accuracy measured here with NumPy ({n:,} images)", acc(tc["numpy_measured_test_accuracy"]),
         acc(tc["torch_measured_test_accuracy"]), ""],
        ["training each model's recipe (model card), s (epochs)",
         f"{_s(tc['numpy_train_seconds'], '.1f')} ({tc['numpy_train_epochs']})",
         f"{_s(tc['torch_train_seconds'], '.1f')} ({tc['torch_train_epochs']})", ""],
        ["seconds per epoch of that recipe", _s(tc["numpy_seconds_per_epoch"], ".1f"),
         _s(tc["torch_seconds_per_epoch"], ".1f"), ratio(tc["numpy_seconds_per_epoch"], tc["torch_seconds_per_epoch"])],
        ["one epoch, same arithmetic (`bench cnn-train`), s", _s(tc["bench_epoch_numpy_s"], ".1f"),
         f"{_s(tc['bench_epoch_torch_s'], '.1f')} (channels_last {_s(tc['bench_epoch_torch_channels_last_s'], '.1f')})",
         given(tc["bench_epoch_ratio"])],
        ["mean loss of that epoch", _s(tc["bench_epoch_mean_loss"][0], ".4f"),
         _s(tc["bench_epoch_mean_loss"][1], ".4f"), ""],
        ["one epoch of each backend's trainer (`bench torch-train`), s", _s(tc["bench_trainer_numpy_s"], ".1f"),
         _s(tc["bench_trainer_torch_s"], ".1f"), given(tc["bench_trainer_ratio"])],
        ["inference, batch of 256 (`bench infer`), ms", _s(tc["bench_infer_numpy_batch256_ms"], ".1f"),
         _s(tc["bench_infer_torch_batch256_ms"], ".1f"),
         given(tc["bench_infer_ratio_batch256"])],
        ["inference, one digit, ms", _s(tc["bench_infer_numpy_single_ms"], ".2f"),
         _s(tc["bench_infer_torch_single_ms"], ".2f"),
         given(tc["bench_infer_ratio_single"])],
    ]
    return Table(["", "NumPy (digitlab.nn)", f"PyTorch {tc['torch_version'] or ''}", "NumPy / PyTorch"], rows)


def section(r: dict[str, Any]) -> Section:
    """The report's text for phase 5, from ``phase5.json``."""
    s = Section("Phase 5 — inside the CNN")
    tc = r["torch_comparison"]
    s.blocks.append(
        f"Model: `{r['model']}` ({r['params']:,} parameters). On the "
        f"{'' if r['test_images'] == 10000 else 'first '}{r['test_images']:,} MNIST test images "
        f"it reads {pct(r['test_accuracy'], 2)} ({r['errors']} errors).")
    s.blocks.append(Figure(
        "phase5_filters.png",
        f"The {r['filters']} kernels of the first convolution, each 3x3 ({r['filter_shape']} in all). "
        f"{r['filters_both_signs']} of the {r['filters']} have a clearly positive and a clearly negative side "
        f"(more than a tenth of the largest weight each): they respond to a change of brightness in one direction "
        f"— an edge of a stroke — rather than to brightness itself. Nine numbers cannot draw more than an edge "
        f"or a dot; the shapes come from the layers that combine them."))
    st = r["feature_stages"]
    shapes = " -> ".join(f"{x['shape'][0]}@{x['shape'][1]}x{x['shape'][2]}" for x in st)
    active = ", ".join(pct(x["active_fraction"], 0) for x in st)
    s.blocks.append(Figure(
        "phase5_features.png",
        f"Test image {r['feature_digit_index']} (a {r['feature_digit_label']}) after each ReLU of the convolutional "
        f"part: {shapes} (channels@height x width), for each the 8 channels whose maps vary most across the "
        f"image. The first maps are the "
        f"digit seen through the edge detectors above; after pooling, maps are coarser and each pixel sees more "
        f"of the digit (receptive field {' -> '.join(str(x['receptive_field']) for x in st)} pixels across); the "
        f"last 4x4 maps say where a part is "
        f"only roughly. Values above zero per stage: {active}; ReLU sets the rest to exactly 0. The "
        f"model reads {r['feature_prediction']} with p = {num(r['feature_probability'], 4)}."))
    mc = r["most_confused"]
    s.blocks.append(Figure(
        "phase5_confusion.png",
        f"Rows: the true digit, columns: the answer. {r['errors']} errors in {r['test_images']:,}; the most "
        f"frequent confusion is a {mc['true']} read as {mc['predicted']} ({mc['count']} "
        f"{'time' if mc['count'] == 1 else 'times'}). Per-class "
        f"accuracy ranges from {pct(min(r['per_class_accuracy']), 2)} to {pct(max(r['per_class_accuracy']), 2)}."))
    m = r["mistakes"]
    if m:
        s.blocks.append(Figure(
            "phase5_mistakes.png",
            f"The {len(m)} mistakes the model was surest about: the most confident says {m[0]['predicted']} "
            f"with p = {num(m[0]['probability'], 3)} for a digit labelled {m[0]['true']}; "
            f"{sum(x['probability'] > 0.9 for x in m)} of the {len(m)} are answered with p > 0.9. Look at them: "
            f"a wrong answer can come with a high probability, which is why the recogniser calibrates its "
            f"probabilities and has a \"not a digit\" class rather than trusting the raw softmax."))
    extras = ", ".join(f"{k} {v}" for k, v in tc["torch_recipe_extras"].items() if v)
    s.blocks.append(
        f"NumPy against PyTorch. Times are read from the benchmark JSON in `docs/bench/` and the model cards "
        f"(each side of a benchmark in its own process; this phase never imports PyTorch), accuracies are "
        f"measured here with NumPy. The NumPy-trained model: `{tc['numpy_command']}`; the PyTorch-trained one: "
        f"`{tc['torch_command']}` (its recipe adds {extras or 'nothing'}). The `bench` rows use "
        f"{tc['bench_epoch_threads']} threads and {_s(tc['bench_epoch_images'], ',')} images per epoch, and their "
        f"ratio column is the benchmark's median of per-pair ratios (each pair ran NumPy and PyTorch back to back); "
        f"the training times of the cards were measured while other jobs shared the machine, so the `bench` rows are "
        f"the controlled comparison."
        + (f" Missing sources: {', '.join(tc['sources_missing'])}." if tc["sources_missing"] else ""))
    s.blocks.append(torch_table(tc))
    return s


__all__ = ["activations", "numpy_vs_torch", "run", "section"]
