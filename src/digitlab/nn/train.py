"""The training loop: seeded mini-batches, per-epoch metrics, best checkpoint, resume, divergence stop.

Reproducibility: the shuffle of epoch ``e`` is ``default_rng([seed, e])`` and dropout layers are
re-seeded from ``[seed, e, layer]`` at the start of each epoch, so a run resumed after epoch ``e``
continues exactly as if it had never stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from digitlab.errors import DigitlabError, TrainingDiverged
from digitlab.nn.model import Sequential, read_npz, save_npz_atomic
from digitlab.nn.schedules import Constant


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    seconds: float


@dataclass
class History:
    epochs: list[EpochLog] = field(default_factory=list)
    best_val_accuracy: float | None = None
    best_epoch: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> History:
        d = json.loads(text)
        return cls([EpochLog(**e) for e in d["epochs"]], d["best_val_accuracy"], d["best_epoch"])


def evaluate(model: Sequential, x: np.ndarray, y: np.ndarray, loss=None, batch_size: int = 1000
             ) -> tuple[float | None, float, np.ndarray]:
    """Mean loss (if ``loss`` given), accuracy and predictions, in eval mode."""
    total, preds = 0.0, []
    for i in range(0, len(x), batch_size):
        logits = model.forward(x[i:i + batch_size], training=False)
        if loss is not None:
            total += loss.forward(logits, y[i:i + batch_size]) * len(logits)
        preds.append(logits.argmax(axis=1))
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    acc = float(np.mean(pred == y)) if len(y) else float("nan")
    return (total / len(x) if loss is not None and len(x) else None), acc, pred


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """``C[t, p]`` counts images of true class t predicted as p."""
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, mininterval=0.5)


def fit(
    model: Sequential, optimizer, loss, x_train: np.ndarray, y_train: np.ndarray, *,
    x_val: np.ndarray | None = None, y_val: np.ndarray | None = None, epochs: int = 10,
    batch_size: int = 64, seed: int = 0, schedule: Callable[[int], float] | None = None,
    checkpoint: str | Path | None = None, resume_path: str | Path | None = None, resume: bool = False,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    progress: bool = True, on_epoch: Callable[[EpochLog], None] | None = None,
    explode_factor: float = 50.0,
) -> History:
    """Train ``model`` and return its `History`.

    ``checkpoint``: the best model so far (by validation accuracy, the later epoch on ties; the last
    one without validation data) is saved there atomically. ``resume_path``: model, optimiser and
    history after every epoch; with ``resume=True`` training continues from it.
    ``augment(xb, rng)`` transforms each training batch.
    Raises `TrainingDiverged` when the loss turns NaN/inf or exceeds ``explode_factor`` times its
    starting value; the checkpoints written so far are kept.
    """
    if len(x_train) != len(y_train):
        raise DigitlabError(f"{len(x_train)} training inputs but {len(y_train)} labels")
    if len(x_train) == 0:
        raise DigitlabError("no training data")
    schedule = schedule or Constant()
    history, start_epoch, first_loss = History(), 0, None
    settings = {"seed": seed, "batch_size": batch_size, "train_size": len(x_train)}
    if resume and resume_path is not None and Path(resume_path).is_file():
        start_epoch, history, first_loss = _restore(resume_path, model, optimizer, settings)
    n = len(x_train)
    steps_per_epoch = math.ceil(n / batch_size)
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        order = np.random.default_rng([seed, epoch]).permutation(n)
        aug_rng = np.random.default_rng([seed, epoch, 1 << 20])
        for i, layer in enumerate(model.layers):
            if hasattr(layer, "reseed"):
                layer.reseed([seed, epoch, i])
        bar = _progress(steps_per_epoch, f"epoch {epoch + 1}/{epochs}", progress)
        loss_sum, correct = 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if augment is not None:
                xb = augment(xb, aug_rng)
            optimizer.lr = optimizer.base_lr * schedule(epoch * steps_per_epoch + b)
            logits = model.forward(xb, training=True)
            value = loss.forward(logits, yb)
            if first_loss is None:
                first_loss = value
            if not math.isfinite(value) or value > explode_factor * max(first_loss, 1e-3):
                if bar is not None:
                    bar.close()
                raise TrainingDiverged(
                    f"the loss became {value:.4g} at epoch {epoch + 1}, batch {b + 1} (it started at "
                    f"{first_loss:.4g}) with learning rate {optimizer.lr:.3g}: the learning rate is too high "
                    f"for this model; try {optimizer.base_lr / 10:.3g} (or add warm-up). Checkpoints saved "
                    f"so far are kept."
                )
            model.backward(loss.backward(), input_grad=False)
            optimizer.step()
            loss_sum += value * len(idx)
            correct += int(np.sum(logits.argmax(axis=1) == yb))
            if bar is not None:
                bar.update(1)
                if b % 50 == 0:
                    bar.set_postfix(loss=f"{value:.4f}", lr=f"{optimizer.lr:.3g}", refresh=False)
        if bar is not None:
            bar.close()
        val_loss = val_acc = None
        if x_val is not None and len(x_val):
            val_loss, val_acc, _ = evaluate(model, x_val, y_val, loss)
        log = EpochLog(epoch + 1, loss_sum / n, correct / n, val_loss, val_acc, optimizer.lr,
                       time.perf_counter() - t0)
        history.epochs.append(log)
        improved = val_acc is None or history.best_val_accuracy is None or val_acc >= history.best_val_accuracy
        if improved:
            history.best_val_accuracy, history.best_epoch = val_acc, epoch + 1
            if checkpoint is not None:
                model.meta["epoch"] = epoch + 1
                model.save(checkpoint)
        if resume_path is not None:
            _snapshot(resume_path, model, optimizer, epoch + 1, history, {**settings, "first_loss": first_loss})
        if on_epoch is not None:
            on_epoch(log)
    return history


def _snapshot(path, model: Sequential, optimizer, epochs_done: int, history: History, settings: dict) -> None:
    arrays = dict(model.state_dict())
    arrays.update({f"__opt__/{k}": v for k, v in optimizer.state_dict().items()})
    arrays["__train__"] = np.array(json.dumps({"epochs_done": epochs_done, "history": history.to_json(),
                                               "optimizer": type(optimizer).__name__, **settings}))
    save_npz_atomic(path, arrays)


def _restore(path, model: Sequential, optimizer, settings: dict) -> tuple[int, History, float | None]:
    """Load a resume file; it must come from a run with the same optimiser, seed, batch size and data,
    else the continued run would silently follow another shuffle."""
    arrays = read_npz(path)
    if "__train__" not in arrays:
        raise DigitlabError(f"{path}: not a digitlab resume file (no training state)")
    info = json.loads(str(arrays["__train__"]))
    if info["optimizer"] != type(optimizer).__name__:
        raise DigitlabError(f"{path}: saved with optimiser {info['optimizer']}, cannot resume with "
                            f"{type(optimizer).__name__}; use the same --optimizer or start afresh")
    for key, value in settings.items():
        if key in info and info[key] != value:
            raise DigitlabError(f"{path}: saved with {key} {info[key]}, this run has {value}; resume with the "
                                f"same settings or delete the resume file to start afresh")
    model.load_state_dict({k: v for k, v in arrays.items() if not k.startswith("__")})
    optimizer.load_state_dict({k[len("__opt__/"):]: v for k, v in arrays.items() if k.startswith("__opt__/")})
    return int(info["epochs_done"]), History.from_json(info["history"]), info.get("first_loss")
