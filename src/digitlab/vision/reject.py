"""Rejection that works: an 11th class "not a digit" plus a calibrated confidence threshold.

`add_reject_class` grows the trained 10-class model by one output (the old outputs keep their
weights), `train_reject` fine-tunes it on MNIST plus the pipeline's own negatives
(`digitlab.data.negatives`), `fit_temperature` calibrates its softmax on validation data
(temperature scaling, Guo et al. 2017: one scalar T minimising the negative log-likelihood), and
`risk_coverage` gives the trade-off behind the threshold: of the boxes we accept (coverage), how
many are read wrong (risk).
"""

from __future__ import annotations

import numpy as np

from digitlab.nn.layers import Dense
from digitlab.nn.model import Sequential

NOT_A_DIGIT = "not a digit"


def add_reject_class(model: Sequential) -> Sequential:
    """A copy of ``model`` whose last Dense layer has one more output, for "not a digit"."""
    from digitlab.nn.model import Sequential as Seq

    new = Seq.from_spec(model.spec())
    new.load_state_dict(model.state_dict())
    last = new.layers[-1]
    if not isinstance(last, Dense) or NOT_A_DIGIT in new.classes:
        raise ValueError("the model must end in a Dense layer and not have a reject class yet")
    grown = Dense(last.in_features, last.out_features + 1, bias=last.bias, init=last.init, seed=12345)
    grown.params["W"][:, :-1] = last.params["W"]
    grown.params["W"][:, -1] = 0.0
    if last.bias:
        grown.params["b"][:-1] = last.params["b"]
        grown.params["b"][-1] = float(last.params["b"].mean())
    new.layers[-1] = grown
    new.classes = [*model.classes, NOT_A_DIGIT]
    return new


def softmax_t(logits: np.ndarray, t: float) -> np.ndarray:
    z = logits / t
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    p = softmax_t(logits.astype(np.float64), t)
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(labels)), labels], 1e-300))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, lo: float = 0.05, hi: float = 20.0) -> float:
    """The T > 0 minimising the NLL of ``softmax(logits / T)`` (golden-section search on log T; the
    NLL is convex in 1/T)."""
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(60):
        if nll(logits, labels, np.exp(c)) < nll(logits, labels, np.exp(d)):
            b, d = d, c
            c = b - g * (b - a)
        else:
            a, c = c, d
            d = a + g * (b - a)
    return float(np.exp((a + b) / 2))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(float(np.mean(pred[sel] == labels[sel])) - float(conf[sel].mean()))
    return float(ece)


def digit_decision(probs: np.ndarray, reject_class: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(label read, confidence) per box: the top digit and its probability; confidence 0 when the
    'not a digit' class wins."""
    label = probs[:, :reject_class].argmax(axis=1)
    conf = probs[:, :reject_class].max(axis=1)
    conf = np.where(probs.argmax(axis=1) == reject_class, 0.0, conf)
    return label, conf


def risk_coverage(probs: np.ndarray, labels: np.ndarray, reject_class: int = 10,
                  thresholds: np.ndarray | None = None) -> list[dict]:
    """For each threshold: coverage (share of *digits* accepted), risk (share of accepted boxes that
    are wrong: a wrong label, or a non-digit accepted as a digit) and the share of non-digits let in."""
    label, conf = digit_decision(probs, reject_class)
    is_digit = labels != reject_class
    thresholds = np.array([0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99]) if thresholds is None else thresholds
    rows = []
    for t in thresholds:
        accept = conf >= t if t > 0 else conf > 0
        wrong = accept & (~is_digit | (label != labels))
        rows.append({"threshold": float(t),
                     "coverage": float(accept[is_digit].mean()) if is_digit.any() else 0.0,
                     "risk": float(wrong.sum() / max(accept.sum(), 1)),
                     "non_digits_accepted": float(accept[~is_digit].mean()) if (~is_digit).any() else 0.0})
    return rows


def choose_threshold(probs: np.ndarray, labels: np.ndarray, max_risk: float = 0.005,
                     reject_class: int = 10) -> float:
    """The lowest threshold whose risk on (validation) data is at most ``max_risk``."""
    for row in risk_coverage(probs, labels, reject_class, np.round(np.arange(0.3, 1.0, 0.01), 2)):
        if row["risk"] <= max_risk:
            return row["threshold"]
    return 0.99


PIPELINE_PAGES = 2000      # synthetic camera pages of MNIST train digits whose pipeline inputs train the model
PIPELINE_VAL_PAGES = 300   # ... of MNIST val digits, for validation and calibration
PIPELINE_TEST_PAGES = 200  # ... of MNIST test digits (other pages than the benchmark's), measured only


def _pipeline_set(pages: int, seed: int, source: str, log=lambda s: None):
    """Pipeline inputs of ``pages`` synthetic pages (`digitlab.data.pipeline_samples`): digits and the
    non-digits the pipeline offers (clutter, touching pairs). Fragments of digits ("piece") are left
    out: many are fair digits on their own (a 9's loop is a 0, a 4's stroke a 1)."""
    from digitlab.data.pipeline_samples import KINDS, make_pipeline_samples

    if pages <= 0:
        return np.zeros((0, 1, 28, 28), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
    x, y, k = make_pipeline_samples(pages, seed=seed, source=source, log=log)
    keep = k != KINDS.index("piece")
    return x[keep], y[keep], k[keep]


def train_reject(base: Sequential, *, negatives: int = 15000, epochs: int = 3, lr: float = 0.01,
                 seed: int = 0, max_risk: float = 0.02, progress: bool = False,
                 pipeline_pages: int = PIPELINE_PAGES, pipeline_val_pages: int = PIPELINE_VAL_PAGES,
                 log=lambda s: None) -> tuple[Sequential, dict]:
    """Fine-tune ``base`` (10 classes) into an 11-class model on MNIST training digits plus the same
    digits as the pipeline presents them on synthetic camera pages (``pipeline_pages``: blurred, noisy,
    small, thresholded, cropped and normalised), synthetic negatives and the pipeline's own non-digits,
    all augmented; then `calibrate` it. Returns the model and the report."""
    from digitlab.data import load_mnist, to_float
    from digitlab.data.augment import Augment
    from digitlab.data.negatives import make_negatives
    from digitlab.nn import SGD, SoftmaxCrossEntropy, fit, make_schedule

    train = load_mnist("train")
    neg_train, _ = make_negatives(negatives, train.images, seed=seed)
    px, py, _ = _pipeline_set(pipeline_pages, seed, "train", log)
    log(f"training set: {len(train.labels)} MNIST digits, {int(np.sum(py < 10))} pipeline digits, "
        f"{len(neg_train)} synthetic + {int(np.sum(py == 10))} pipeline non-digits")
    x = np.concatenate([to_float(train.images), neg_train, px])
    y = np.concatenate([train.labels, np.full(len(neg_train), 10), py])
    x_val, y_val, _ = _validation(seed, pipeline_val_pages, log)
    model = add_reject_class(base)
    opt = SGD(model, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = -(-len(x) // 128)
    history = fit(model, opt, SoftmaxCrossEntropy(), x, y, x_val=x_val, y_val=y_val, epochs=epochs, batch_size=128,
                  seed=seed, schedule=make_schedule("cosine", epochs * steps, steps, 0.2), augment=Augment(),
                  progress=progress, on_epoch=lambda e: log(f"epoch {e.epoch}: val acc {e.val_accuracy:.4f}"))
    report = calibrate(model, seed=seed, max_risk=max_risk, pipeline_val_pages=pipeline_val_pages, log=log,
                       validation=(x_val, y_val))
    report["epochs"] = [vars(e) for e in history.epochs]
    report["training_set"] = {"mnist_digits": int(len(train.labels)), "pipeline_pages": int(pipeline_pages),
                              "pipeline_digits": int(np.sum(py < 10)), "synthetic_negatives": int(len(neg_train)),
                              "pipeline_non_digits": int(np.sum(py == 10))}
    return model, report


def _validation(seed: int, pipeline_pages: int = PIPELINE_VAL_PAGES, log=lambda s: None):
    """MNIST val digits, 2,000 synthetic negatives and the pipeline inputs of ``pipeline_pages`` pages of
    MNIST val digits (seeded): ``(x, y, kinds of the synthetic negatives)``."""
    from digitlab.data import load_mnist, to_float
    from digitlab.data.negatives import make_negatives

    train, val = load_mnist("train"), load_mnist("val")
    neg_val, kinds = make_negatives(2000, train.images, seed=seed + 1)
    px, py, _ = _pipeline_set(pipeline_pages, seed + 1, "val", log)
    return (np.concatenate([to_float(val.images), neg_val, px]),
            np.concatenate([val.labels, np.full(len(neg_val), 10), py]), kinds)


def calibrate(model: Sequential, seed: int = 0, max_risk: float = 0.02, *,
              pipeline_val_pages: int = PIPELINE_VAL_PAGES, pipeline_test_pages: int = PIPELINE_TEST_PAGES,
              log=lambda s: None, validation=None) -> dict:
    """Temperature and threshold from validation data (seeded): MNIST val digits, negatives and the
    pipeline inputs of synthetic pages of val digits; measured on MNIST test + 2,000 fresh negatives and
    on the pipeline inputs of ``pipeline_test_pages`` pages of test digits; written into ``model.meta``.
    The threshold is the lowest whose validation risk is at most ``max_risk``."""
    from digitlab.data import load_mnist, to_float
    from digitlab.data.negatives import KINDS, make_negatives

    x_val, y_val = validation if validation is not None else _validation(seed, pipeline_val_pages, log)[:2]
    val_logits = model.predict_logits(x_val)
    t = fit_temperature(val_logits, y_val)
    probs_val = softmax_t(val_logits, t)
    threshold = choose_threshold(probs_val, y_val, max_risk=max_risk)
    train, test = load_mnist("train"), load_mnist("test")
    neg_test, kinds_test = make_negatives(2000, train.images, seed=seed + 2)
    x_test = np.concatenate([to_float(test.images), neg_test])
    y_test = np.concatenate([test.labels, np.full(len(neg_test), 10)])
    test_logits = model.predict_logits(x_test)
    probs_test = softmax_t(test_logits, t)
    n = len(test.labels)
    label, conf = digit_decision(probs_test[:n])
    neg_conf = digit_decision(probs_test[n:])[1]
    report = {
        "temperature": t, "reject_threshold": threshold, "max_risk": max_risk,
        "nll_val_before": nll(val_logits, y_val, 1.0), "nll_val_after": nll(val_logits, y_val, t),
        "ece_val_before": expected_calibration_error(softmax_t(val_logits, 1.0), y_val),
        "ece_val_after": expected_calibration_error(probs_val, y_val),
        "mnist_test_accuracy_digit_argmax": float(np.mean(label == test.labels)),
        "mnist_test_accuracy_11_class": float(np.mean(test_logits[:n].argmax(axis=1) == test.labels)),
        "mnist_test_accepted_and_right": float(np.mean((label == test.labels) & (conf >= threshold))),
        "mnist_test_rejected_at_threshold": float(np.mean(conf < threshold)),
        "negatives_test_rejected_at_threshold": float(np.mean(neg_conf < threshold)),
        "negatives_rejected_by_kind": {name: float(np.mean(neg_conf[kinds_test == k] < threshold))
                                       for k, name in enumerate(KINDS) if np.any(kinds_test == k)},
        "risk_coverage_test": risk_coverage(probs_test, y_test),
    }
    if pipeline_test_pages > 0:  # the digits and non-digits the pipeline shows on photo-like pages
        px, py, _ = _pipeline_set(pipeline_test_pages, seed + 2, "test", log)
        probs_pipe = softmax_t(model.predict_logits(px), t)
        pl, pc = digit_decision(probs_pipe)
        digit = py < 10
        right = (pl[digit] == py[digit]) & (pc[digit] >= threshold)
        report.update({
            "pipeline_test_pages": int(pipeline_test_pages), "pipeline_test_digits": int(digit.sum()),
            "pipeline_test_non_digits": int((~digit).sum()),
            "pipeline_test_digits_accepted_and_right": float(np.mean(right)),
            "pipeline_test_digits_rejected": float(np.mean(pc[digit] < threshold)),
            "pipeline_test_non_digits_rejected": float(np.mean(pc[~digit] < threshold)) if (~digit).any() else None,
            "risk_coverage_pipeline_test": risk_coverage(probs_pipe, py),
        })
    model.meta.update({"temperature": t, "reject_threshold": threshold, "reject_class": 10,
                       "reject_report": report})
    return report
