"""Learning from mistakes: save what the live reader got wrong, look at it, fine-tune on it.

A captures folder holds ``crops/NNNNNN.png`` (the camera's crop of the box, BGR, as the user saw it),
``inputs/NNNNNN.png`` (the 28x28 model input the pipeline made of it, ink bright on black, uint8) and
``labels.csv`` with one row per capture::

    file,input,label,predicted,confidence,source,frame,x,y,w,h,time

``label`` is the true class the user typed (0-9, or 10 for "not a digit"); ``predicted`` and
``confidence`` what the model said, blank when unknown. The model learns from the *inputs* (what it
actually saw), the crops are for people (`contact_sheet`).

`finetune` trains a copy of the model on a seeded MNIST subset (plus the pipeline's negatives when it
has the "not a digit" class, so rejection is not forgotten) and the captures weighted up, keeping part
of the captures aside to measure whether the lesson generalises rather than being memorised.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from digitlab.errors import DigitlabError

HEADER = ("file", "input", "label", "predicted", "confidence", "source", "frame", "x", "y", "w", "h", "time")
REJECT_LABEL = 10
LABEL_NAMES = [str(i) for i in range(10)] + ["not a digit"]
_NUMBERED = re.compile(r"^(\d{6,})\.png$")


def label_name(label: int) -> str:
    """``"3"`` for 3, ``"not a digit"`` for 10."""
    return LABEL_NAMES[label]


# -- saving ----------------------------------------------------------------------------------------
def _check_label(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= REJECT_LABEL:
        raise DigitlabError(f"{what} must be a digit 0-9 or {REJECT_LABEL} for 'not a digit', got {value!r}")
    return int(value)


def _input_to_uint8(model_input: np.ndarray) -> np.ndarray:
    x = np.asarray(model_input, dtype=np.float32)
    if x.size != 28 * 28:
        raise DigitlabError(f"the model input must be 28x28 (as the pipeline makes it), got shape {x.shape}")
    x = x.reshape(28, 28)
    if not np.all(np.isfinite(x)) or x.min() < -1e-3 or x.max() > 1 + 1e-3:
        raise DigitlabError("the model input must be floats in [0, 1] (ink bright on black); got values "
                            f"from {float(np.nanmin(x)):.3g} to {float(np.nanmax(x)):.3g}")
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def _crop_to_bgr(crop: np.ndarray) -> np.ndarray:
    crop = np.asarray(crop)
    if crop.ndim not in (2, 3) or crop.size == 0 or (crop.ndim == 3 and crop.shape[2] not in (1, 3, 4)):
        raise DigitlabError(f"the crop must be a non-empty grey or BGR image, got shape {crop.shape}")
    if crop.dtype != np.uint8:
        scale = 255.0 if crop.dtype.kind == "f" and float(crop.max()) <= 1.0 else 1.0
        crop = np.clip(crop.astype(np.float32) * scale, 0, 255).round().astype(np.uint8)
    if crop.ndim == 2 or crop.shape[2] == 1:
        return cv2.cvtColor(crop.reshape(crop.shape[:2]), cv2.COLOR_GRAY2BGR)
    return crop[:, :, :3]


def _write_png(path: Path, image: np.ndarray) -> None:
    """PNG through a temp file and a rename, so a crash never leaves half an image under the real name."""
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise DigitlabError(f"{path}: OpenCV could not encode the image as PNG")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.tobytes())
    os.replace(tmp, path)


def _next_number(folder: Path) -> int:
    """One past the highest number used by a CSV row *or* by an image file: an image left behind by an
    interrupted save (no row yet) is never overwritten by the next one."""
    highest = 0
    for sub in ("crops", "inputs"):
        if (folder / sub).is_dir():
            for p in (folder / sub).iterdir():
                m = _NUMBERED.match(p.name)
                if m:
                    highest = max(highest, int(m.group(1)))
    csv_path = folder / "labels.csv"
    if csv_path.is_file():
        for row in csv.reader(io.StringIO(csv_path.read_text(encoding="utf-8", errors="replace"))):
            m = _NUMBERED.match(Path(row[0]).name) if row else None
            if m:
                highest = max(highest, int(m.group(1)))
    return highest + 1


def _csv_line(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _append_line(path: Path, line: str) -> None:
    """Append one whole CSV line durably. A torn last line (a crash in the middle of an earlier write,
    so no final newline) is cut off first: it never held a complete capture, and gluing the new row to
    it would corrupt both. The header is written when the file is new or empty."""
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                f.seek(0)
                data = f.read()
                keep = data.rfind(b"\n") + 1
                f.truncate(keep)
                size = keep
        payload = line.encode("utf-8")
        if size == 0:
            payload = _csv_line(list(HEADER)).encode("utf-8") + payload
        f.seek(0, os.SEEK_END)
        f.write(payload)  # one write of the whole line (append mode: never interleaved mid-file)
        f.flush()
        os.fsync(f.fileno())


def save_capture(folder: str | os.PathLike, crop_bgr: np.ndarray, model_input: np.ndarray, label: int, *,
                 source: str = "", frame: int = 0, box: tuple[int, int, int, int] = (0, 0, 0, 0),
                 predicted: int | None = None, confidence: float | None = None) -> Path:
    """Save one capture (crop, 28x28 input, true label) and return the crop's path.

    Creates the folder on first use; numbering continues across calls and sessions. The images are
    written first and the CSV row last, so a row never points at a missing image."""
    label = _check_label(label, "the label")
    if predicted is not None:
        predicted = _check_label(predicted, "the predicted label")
    if confidence is not None and not (math.isfinite(float(confidence)) and 0 <= float(confidence) <= 1):
        raise DigitlabError(f"the confidence must be in [0, 1], got {confidence!r}")
    if len(box) != 4:
        raise DigitlabError(f"the box must be (x, y, w, h), got {box!r}")
    bgr, small = _crop_to_bgr(crop_bgr), _input_to_uint8(model_input)
    folder = Path(folder)
    try:
        (folder / "crops").mkdir(parents=True, exist_ok=True)
        (folder / "inputs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DigitlabError(f"{folder}: cannot create the captures folder ({exc}); choose a writable one") from None
    name = f"{_next_number(folder):06d}.png"
    crop_path = folder / "crops" / name
    _write_png(crop_path, bgr)
    _write_png(folder / "inputs" / name, small)
    x, y, w, h = (int(v) for v in box)
    row = [f"crops/{name}", f"inputs/{name}", label, "" if predicted is None else predicted,
           "" if confidence is None else f"{float(confidence):.4f}", source, int(frame), x, y, w, h,
           datetime.now().astimezone().isoformat(timespec="seconds")]
    _append_line(folder / "labels.csv", _csv_line(row))
    return crop_path


# -- loading ---------------------------------------------------------------------------------------
@dataclass
class Captures:
    """The captures of a folder: model inputs ``(N, 1, 28, 28)`` float32 in [0, 1], true labels int64,
    what the model predicted at capture time (-1 when unknown), the BGR crops and the CSV rows."""

    inputs: np.ndarray
    labels: np.ndarray
    rows: list[dict[str, str]]
    crops: list[np.ndarray] = field(default_factory=list)
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    folder: Path = Path(".")

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        """Captures per label name, in label order."""
        c = Counter(self.labels.tolist())
        return {label_name(k): c[k] for k in sorted(c)}

    def subset(self, idx: np.ndarray) -> Captures:
        idx = np.asarray(idx, dtype=np.int64)
        return Captures(self.inputs[idx], self.labels[idx], [self.rows[i] for i in idx],
                        [self.crops[i] for i in idx] if self.crops else [], self.predicted[idx], self.folder)


def _read_image(path: Path, flags: int, what: str, where: str) -> np.ndarray:
    data = path.read_bytes() if path.is_file() else None
    if data is None:
        raise DigitlabError(f"{where}: the {what} {path} is missing; restore it or delete that row from labels.csv")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None
    if img is None:
        raise DigitlabError(f"{where}: the {what} {path} is not a readable image; restore it or delete that row")
    return img


def load_captures(folder: str | os.PathLike) -> Captures:
    """Read a captures folder written by `save_capture`, checking every row; errors name the row."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DigitlabError(f"{folder}: no such captures folder; save captures with `s` and a digit key in "
                            f"`digitlab live`, or point at the folder that holds labels.csv")
    csv_path = folder / "labels.csv"
    if not csv_path.is_file():
        raise DigitlabError(f"{csv_path}: no labels.csv in this folder; is it a captures folder?")
    try:
        text = csv_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DigitlabError(f"{csv_path}: not a text CSV file ({exc})") from None
    lines = list(csv.reader(io.StringIO(text)))
    if not lines or tuple(h.strip() for h in lines[0]) != HEADER:
        found = ",".join(lines[0]) if lines else "(empty file)"
        raise DigitlabError(f"{csv_path}: the header should be {','.join(HEADER)}, found {found!r}; "
                            f"is this a digitlab captures file?")
    inputs, labels, predicted, rows, crops = [], [], [], [], []
    for number, values in enumerate(lines[1:], start=2):
        if not values or all(not v.strip() for v in values):
            continue
        where = f"{csv_path} line {number}"
        if len(values) != len(HEADER):
            raise DigitlabError(f"{where}: expected {len(HEADER)} fields, found {len(values)} ({','.join(values)!r}); "
                                f"fix or delete that line")
        row = dict(zip(HEADER, values, strict=True))
        try:
            label = int(row["label"])
        except ValueError:
            label = -1
        if not 0 <= label <= REJECT_LABEL:
            raise DigitlabError(f"{where}: label {row['label']!r} is not a digit 0-9 or {REJECT_LABEL} "
                                f"('not a digit'); fix or delete that line")
        pred_text = row["predicted"].strip()
        if pred_text and not (pred_text.isdigit() and 0 <= int(pred_text) <= REJECT_LABEL):
            raise DigitlabError(f"{where}: predicted {pred_text!r} is not a class 0-{REJECT_LABEL}; fix or blank it")
        small = _read_image(folder / row["input"], cv2.IMREAD_GRAYSCALE, "model input", where)
        if small.shape != (28, 28):
            raise DigitlabError(f"{where}: the model input {folder / row['input']} is {small.shape[1]}x"
                                f"{small.shape[0]}, not 28x28; restore it or delete that row")
        crops.append(_read_image(folder / row["file"], cv2.IMREAD_COLOR, "crop", where))
        inputs.append(small)
        labels.append(label)
        predicted.append(int(pred_text) if pred_text else -1)
        rows.append(row)
    from digitlab.data import to_float  # the one uint8 -> model input conversion

    x = to_float(np.stack(inputs)) if inputs else np.zeros((0, 1, 28, 28), np.float32)
    return Captures(x, np.array(labels, np.int64), rows, crops, np.array(predicted, np.int64), folder)


# -- contact sheet ---------------------------------------------------------------------------------
TILE = 56  # the side of the crop box and of the (2x) model input on a sheet
TILE_W, TILE_H = 2 * TILE + 12, TILE + 30
WHITE, GREEN, RED, GREY = (255, 255, 255), (60, 200, 60), (60, 60, 230), (160, 160, 160)


def _short(label: int) -> str:
    return "no" if label == REJECT_LABEL else str(label)


def _tile(crop: np.ndarray, small: np.ndarray, label: int, predicted: int, number: str) -> np.ndarray:
    tile = np.full((TILE_H, TILE_W, 3), 40, np.uint8)
    h, w = crop.shape[:2]
    s = TILE / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    resized = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    y0, x0 = 4 + (TILE - nh) // 2, 4 + (TILE - nw) // 2
    tile[y0:y0 + nh, x0:x0 + nw] = resized
    big = cv2.resize(small, (TILE, TILE), interpolation=cv2.INTER_NEAREST)
    tile[4:4 + TILE, TILE + 8:2 * TILE + 8] = big[:, :, None]
    font = cv2.FONT_HERSHEY_SIMPLEX
    base = TILE + 22
    cv2.putText(tile, _short(label), (4, base), font, 0.6, WHITE, 2, cv2.LINE_AA)
    if predicted >= 0:
        colour = GREEN if predicted == label else RED
        cv2.putText(tile, f"read {_short(predicted)}", (34, base), font, 0.4, colour, 1, cv2.LINE_AA)
    cv2.putText(tile, number, (TILE_W - 8 * len(number) - 2, base), font, 0.3, GREY, 1, cv2.LINE_AA)
    return tile


def contact_sheet(captures: Captures, columns: int = 10) -> np.ndarray:
    """All captures as one BGR image: per tile the crop (fitted into 56x56) beside its 28x28 input at
    2x, the true label below in white and, when known, ``read P`` (green if right, red if wrong) and
    the capture's number (to find its row in labels.csv)."""
    if columns < 1:
        raise DigitlabError(f"columns must be at least 1, got {columns}")
    n = len(captures)
    if n == 0:
        sheet = np.full((TILE_H, 3 * TILE_W, 3), 40, np.uint8)
        cv2.putText(sheet, "no captures yet", (8, TILE_H // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, WHITE, 1, cv2.LINE_AA)
        return sheet
    cols = min(columns, n)
    rows = -(-n // cols)
    sheet = np.zeros((rows * TILE_H, cols * TILE_W, 3), np.uint8)
    small = np.round(captures.inputs[:, 0] * 255).astype(np.uint8)
    for i in range(n):
        crop = captures.crops[i] if captures.crops else cv2.cvtColor(small[i], cv2.COLOR_GRAY2BGR)
        m = _NUMBERED.match(Path(captures.rows[i]["file"]).name) if captures.rows else None
        number = f"#{int(m.group(1))}" if m else ""
        pred = int(captures.predicted[i]) if len(captures.predicted) else -1
        r, c = divmod(i, cols)
        sheet[r * TILE_H:(r + 1) * TILE_H, c * TILE_W:(c + 1) * TILE_W] = \
            _tile(crop, small[i], int(captures.labels[i]), pred, number)
    # thin grid lines between tiles
    sheet[::TILE_H] = 90
    sheet[:, ::TILE_W] = 90
    return sheet


# -- fine-tuning -----------------------------------------------------------------------------------
def split_captures(labels: np.ndarray, holdout: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) indices.

    ``k = round(N * holdout)`` captures are held out, at least one when N >= 2 and ``holdout > 0``, and
    never all of them. They are taken one at a time from the label furthest below its share
    ``k * N_label / N`` (ties broken at random), so the held-out part follows the label mix; a label
    gives up its last training capture only when no label has two left. So each kind of mistake the
    user took the trouble to save is learnt from, and the held-out accuracy measures the lesson on
    captures the model did not see.
    """
    if not 0 <= holdout < 1:
        raise DigitlabError(f"holdout must be in [0, 1), got {holdout}")
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng([seed, 7])
    k = 0 if n < 2 or holdout == 0 else min(n - 1, max(1, round(n * holdout)))
    pools = {int(c): list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)}
    tiebreak = {c: float(rng.random()) for c in pools}
    quota = {c: len(pool) * k / max(n, 1) for c, pool in pools.items()}
    taken = dict.fromkeys(pools, 0)
    held = []
    for _ in range(k):
        eligible = [c for c in pools if len(pools[c]) >= 2] or [c for c in pools if pools[c]]
        c = max(eligible, key=lambda c: (quota[c] - taken[c], tiebreak[c]))
        held.append(pools[c].pop())
        taken[c] += 1
    held_idx = np.sort(np.array(held, np.int64))
    train_idx = np.setdiff1d(np.arange(n), held_idx)
    return train_idx, held_idx


@contextmanager
def frozen_batchnorm(model) -> Iterator[int]:
    """Within the block every BatchNorm layer normalises with its running statistics even in training
    mode (gamma and beta still learn; the statistics stay as they were). Yields the number of layers.

    Why: fine-tuning batches are a different mix (MNIST subset, negatives, repeated captures) from the
    original training, and a few hundred steps of batch statistics would shift the running averages the
    shipped temperature and threshold were calibrated with. Frozen statistics also make the model in
    training compute exactly the function it will compute when deployed."""
    from digitlab.nn.conv import BatchNorm

    layers = [layer for layer in model.layers if isinstance(layer, BatchNorm)]
    for layer in layers:
        layer.forward = (lambda f: lambda x, training=False: f(x, False))(layer.forward)
    try:
        yield len(layers)
    finally:
        for layer in layers:
            del layer.forward


def copy_model(model):
    """An independent copy (same spec, meta and weights); the original is never touched."""
    from digitlab.nn.model import Sequential

    new = Sequential.from_spec(json.loads(json.dumps(model.spec())), dtype=model.dtype)
    new.load_state_dict(model.state_dict())
    return new


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float | None:
    return float(np.mean(model.predict(x) == y)) if len(y) else None


def _scores(model, x_test: np.ndarray, y_test: np.ndarray, neg_test: np.ndarray, train: Captures,
            held: Captures) -> dict[str, Any]:
    logits = model.predict_logits(x_test) if len(x_test) else np.zeros((0, len(model.classes)))
    return {
        "mnist_test": float(np.mean(logits.argmax(axis=1) == y_test)) if len(y_test) else None,
        "mnist_test_digit_argmax": float(np.mean(logits[:, :10].argmax(axis=1) == y_test)) if len(y_test) else None,
        "captures_heldout": _accuracy(model, held.inputs, held.labels),
        "captures_train": _accuracy(model, train.inputs, train.labels),
        "negatives_rejected": float(np.mean(model.predict(neg_test) == REJECT_LABEL)) if len(neg_test) else None,
    }


def finetune(model, captures: Captures, *, epochs: int = 2, mnist_images: int = 10000, negatives: int | None = None,
             capture_weight: int = 10, holdout: float = 0.25, lr: float = 0.005, batch_size: int = 64,
             augment: bool = True, mnist_test: int = 10000, negatives_test: int = 1000, recalibrate: bool = False,
             seed: int = 0, command: str | None = None,
             log: Callable[[str], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Fine-tune a copy of ``model`` on MNIST plus ``captures``; return it and the report.

    Training set: ``mnist_images`` seeded MNIST training digits (the validation and test parts are not
    touched); when the model has the "not a digit" class also ``negatives`` pipeline negatives (default:
    the 15,000 : 55,000 ratio the class was trained with) so rejection is not forgotten; and the
    training part of the captures repeated ``capture_weight`` times. ``augment`` distorts every batch
    (as in training the shipped model), so the repeats of a capture are not identical copies.
    SGD with Nesterov momentum, a cosine decay from ``lr`` (a tenth of the original training's peak:
    small steps that move the decision on the captures without unlearning MNIST); BatchNorm statistics
    frozen (`frozen_batchnorm`). The temperature and threshold are kept (frozen statistics and small
    steps hardly change the logit scale); ``recalibrate=True`` refits both with
    `digitlab.vision.reject.calibrate` (about 19,000 extra forward passes).

    Report: accuracy before and after (11-class argmax, so a digit rejected as "not a digit" counts as
    wrong; also the 10-digit argmax for MNIST) on the first ``mnist_test`` MNIST test images, the
    held-out captures and the capture training part, and the share of ``negatives_test`` fresh
    negatives still read as "not a digit" (is rejection forgotten?); counts, seconds, seed, settings. It goes into
    ``meta["finetune"]`` of the new model.
    """
    from digitlab.data import load_mnist, to_float
    from digitlab.data.augment import Augment
    from digitlab.nn import SGD, SoftmaxCrossEntropy, fit, make_schedule

    say = log or (lambda s: None)
    t0 = time.perf_counter()
    classes = list(model.classes)
    if classes[:10] != LABEL_NAMES[:10] or tuple(model.input_shape) != (1, 28, 28):
        raise DigitlabError("fine-tuning needs a digit model with 28x28 inputs and classes 0-9 "
                            f"(got input {tuple(model.input_shape)}, classes {classes[:11]})")
    has_reject = len(classes) == 11 and classes[REJECT_LABEL] == LABEL_NAMES[REJECT_LABEL]
    if len(captures) == 0:
        raise DigitlabError(f"{captures.folder}: no captures to learn from; save some with `s` and a digit key "
                            f"in `digitlab live`")
    if not has_reject and np.any(captures.labels == REJECT_LABEL):
        raise DigitlabError(f"{captures.folder}: some captures are labelled 'not a digit' but the model has no "
                            f"such class; fine-tune the shipped 11-class model or drop those rows")
    for name, value in (("epochs", epochs), ("capture_weight", capture_weight), ("batch_size", batch_size)):
        if value < 1:
            raise DigitlabError(f"{name} must be at least 1, got {value}")
    if min(mnist_images, mnist_test, negatives_test, 0 if negatives is None else negatives) < 0:
        raise DigitlabError("mnist_images, mnist_test, negatives and negatives_test must be >= 0")

    train_idx, held_idx = split_captures(captures.labels, holdout, seed)
    cap_train, cap_held = captures.subset(train_idx), captures.subset(held_idx)
    rng = np.random.default_rng([seed, 11])
    mnist = load_mnist("train")
    pick = rng.choice(len(mnist), size=min(mnist_images, len(mnist)), replace=False)
    parts_x, parts_y = [to_float(mnist.images[pick])], [mnist.labels[pick]]
    n_neg = 0
    if has_reject:
        from digitlab.data.negatives import make_negatives

        n_neg = round(len(pick) * 15000 / 55000) if negatives is None else int(negatives)
        if n_neg:
            neg, _ = make_negatives(n_neg, mnist.images, seed=seed + 101)
            parts_x.append(neg)
            parts_y.append(np.full(n_neg, REJECT_LABEL, np.int64))
    parts_x.append(np.repeat(cap_train.inputs, capture_weight, axis=0))
    parts_y.append(np.repeat(cap_train.labels, capture_weight))
    x = np.concatenate(parts_x).astype(model.dtype, copy=False)
    y = np.concatenate(parts_y).astype(np.int64)

    test = load_mnist("test")
    x_test, y_test = to_float(test.images[:mnist_test]), test.labels[:mnist_test]
    say(f"evaluating the model before fine-tuning ({len(y_test)} MNIST test images, {len(captures)} captures)")
    neg_test = np.zeros((0, 1, 28, 28), np.float32)
    if has_reject and negatives_test:
        from digitlab.data.negatives import make_negatives

        neg_test, _ = make_negatives(negatives_test, mnist.images, seed=seed + 202)
    before = _scores(model, x_test, y_test, neg_test, cap_train, cap_held)

    new = copy_model(model)
    opt = SGD(new, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = -(-len(x) // batch_size)
    say(f"fine-tuning on {len(pick)} MNIST digits, {n_neg} negatives and {len(cap_train)} captures x "
        f"{capture_weight} ({len(x)} examples, {epochs} epochs); {len(cap_held)} captures held out")
    with frozen_batchnorm(new) as n_bn:
        history = fit(new, opt, SoftmaxCrossEntropy(), x, y, x_val=cap_held.inputs if len(cap_held) else None,
                      y_val=cap_held.labels if len(cap_held) else None, epochs=epochs, batch_size=batch_size,
                      seed=seed, schedule=make_schedule("cosine", epochs * steps, steps, 0.0),
                      augment=Augment() if augment else None, progress=False,
                      on_epoch=lambda e: say(f"epoch {e.epoch}: loss {e.train_loss:.4f}, train acc "
                                             f"{e.train_accuracy:.4f}"
                                             + (f", held-out captures {e.val_accuracy:.3f}"
                                                if e.val_accuracy is not None else "")))
    after = _scores(new, x_test, y_test, neg_test, cap_train, cap_held)
    calibration = None
    if recalibrate and has_reject:
        from digitlab.vision.reject import calibrate

        say("recalibrating temperature and threshold on validation digits + negatives")
        calibration = calibrate(new, seed=seed)
    report: dict[str, Any] = {
        "captures_folder": str(captures.folder), "seed": seed, "epochs": epochs, "lr": lr, "batch_size": batch_size,
        "capture_weight": capture_weight, "holdout": holdout, "augment": augment,
        "optimizer": "sgd nesterov momentum 0.9, weight decay 5e-4, cosine decay",
        "batchnorm": f"frozen: {n_bn} layers normalise with their running statistics; gamma and beta train",
        "calibration": ("refit with reject.calibrate" if calibration is not None
                        else "kept from the base model" if has_reject else "none (10-class model)"),
        "counts": {"captures": len(captures), "captures_train": len(cap_train), "captures_heldout": len(cap_held),
                   "captures_by_label": captures.counts(), "mnist_images": len(pick), "negatives": n_neg,
                   "train_examples": len(x), "mnist_test": len(y_test), "negatives_test": len(neg_test)},
        "heldout_files": [r["file"] for r in cap_held.rows],
        "before": before, "after": after,
        "history": [vars(e) for e in history.epochs],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if command is not None:
        report["command"] = command
    if calibration is not None:
        report["temperature"], report["reject_threshold"] = calibration["temperature"], calibration["reject_threshold"]
    new.meta["finetune"] = report
    if len(y_test) == len(test.labels):  # the card's test accuracy is the full test set's digit argmax
        new.meta["test_accuracy"] = after["mnist_test_digit_argmax"]
    else:  # a subset: no number of the base model may pass for this one's
        new.meta.pop("test_accuracy", None)
    return new, report


# -- command line ----------------------------------------------------------------------------------
def add_captures(sub) -> None:
    """``digitlab captures review DIR [--out sheet.png] [--columns N]``."""
    p = sub.add_parser("captures", help="look at the digits saved from `digitlab live` (s + digit key)")
    actions = p.add_subparsers(dest="captures_action", metavar="ACTION")
    r = actions.add_parser("review", help="write a contact sheet of a captures folder (crop, input, labels)")
    r.add_argument("folder", type=Path, help="the captures folder (holds labels.csv)")
    r.add_argument("--out", type=Path, help="the PNG to write (default FOLDER/contact-sheet.png)")
    r.add_argument("--columns", type=int, default=10, help="tiles per row (10)")
    r.set_defaults(func=cmd_captures_review)

    def no_action(args) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=no_action)


def cmd_captures_review(args) -> int:
    caps = load_captures(args.folder)
    sheet = contact_sheet(caps, columns=args.columns)
    out = args.out or args.folder / "contact-sheet.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), sheet):
        raise DigitlabError(f"{out}: could not write the contact sheet (is the folder writable, the name .png?)")
    known = caps.predicted >= 0
    misread = int(np.sum(known & (caps.predicted != caps.labels)))
    counts = "  ".join(f"{k}: {v}" for k, v in caps.counts().items()) or "(none)"
    print(f"{len(caps)} captures  [{counts}]" + (f"; {misread} of {int(known.sum())} were misread" if known.any()
                                                  else ""))
    print(f"wrote {out}")
    return 0


def add_finetune(sub) -> None:
    """``digitlab finetune --captures DIR [--model PATH] [--out PATH] ...``."""
    p = sub.add_parser("finetune", help="fine-tune the model on MNIST plus the captures saved from `digitlab live`")
    p.add_argument("--captures", type=Path, required=True, help="the captures folder (holds labels.csv)")
    p.add_argument("--model", type=Path, help="the model to start from (default: the shipped models/digitlab-cnn.npz)")
    p.add_argument("--out", type=Path, help="where the fine-tuned model goes (default CAPTURES/finetuned.npz; "
                                            "its card beside it as .json)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--capture-weight", type=int, default=10, help="each training capture counts this many times (10)")
    p.add_argument("--mnist-images", type=int, default=10000, help="MNIST training digits mixed in (10000)")
    p.add_argument("--mnist-test", type=int, default=10000, help="score on the first N MNIST test images (10000)")
    p.add_argument("--holdout", type=float, default=0.25, help="share of the captures kept for validation (0.25)")
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--no-augment", action="store_true", help="train on the images as they are")
    p.add_argument("--recalibrate", action="store_true", help="refit temperature and threshold afterwards (slower)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    p.set_defaults(func=cmd_finetune)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def cmd_finetune(args) -> int:
    import shlex

    from digitlab.cli import machine_description
    from digitlab.vision.recognizer import default_model_path, load_model

    model_path = args.model or default_model_path()
    model = load_model(model_path)
    if not hasattr(model, "layers"):
        raise DigitlabError(f"{model_path}: only NumPy .npz models can be fine-tuned here; "
                            f"use the .npz the ONNX file was exported from")
    caps = load_captures(args.captures)
    out = args.out or args.captures / "finetuned.npz"
    if out.suffix != ".npz":
        raise DigitlabError(f"{out}: the fine-tuned model is a .npz file; give --out a name ending in .npz")
    stream = sys.stderr if args.json else sys.stdout
    command = "digitlab " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    new, report = finetune(model, caps, epochs=args.epochs, mnist_images=args.mnist_images,
                           capture_weight=args.capture_weight, holdout=args.holdout, lr=args.lr,
                           augment=not args.no_augment, mnist_test=args.mnist_test, recalibrate=args.recalibrate,
                           seed=args.seed, command=command, log=lambda s: print(s, file=stream, flush=True))
    report.update({"base_model": str(model_path), "machine": machine_description()})
    new.meta["finetune"] = report
    new.save(out)
    card_path = out.with_suffix(".json")
    meta = {k: v for k, v in new.meta.items() if k not in ("reject_report", "finetune")}
    card = {"model": out.name, "classes": new.classes, "architecture": new.spec()["layers"],
            "params": new.num_params(), **meta, "finetune": report}
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=1) + "\n")
    os.replace(tmp, card_path)
    if args.json:
        summary = {k: report[k] for k in ("before", "after", "counts", "seconds", "seed")}
        print(json.dumps({**summary, "model": str(out), "card": str(card_path)}))
        return 0
    c = report["counts"]
    print(f"{'':28s}{'before':>9s}{'after':>9s}")
    for key, name in (("mnist_test", f"MNIST test ({c['mnist_test']})"),
                      ("captures_heldout", f"captures held out ({c['captures_heldout']})"),
                      ("captures_train", f"captures trained on ({c['captures_train']})"),
                      ("negatives_rejected", f"negatives rejected ({c['negatives_test']})")):
        print(f"{name:28s}{_fmt(report['before'][key]):>9s}{_fmt(report['after'][key]):>9s}")
    print(f"saved {out} (card {card_path}) in {report['seconds']:.1f} s")
    return 0
