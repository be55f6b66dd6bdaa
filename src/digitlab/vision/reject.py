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


def train_reject(base: Sequential, *, negatives: int = 15000, epochs: int = 3, lr: float = 0.01,
                 seed: int = 0, max_risk: float = 0.02, progress: bool = False,
                 log=lambda s: None) -> tuple[Sequential, dict]:
    """Fine-tune ``base`` (10 classes) into an 11-class model on MNIST training digits (augmented) plus
    negatives, then `calibrate` it. Returns the model and the report."""
    from digitlab.data import load_mnist, to_float
    from digitlab.data.augment import Augment
    from digitlab.data.negatives import make_negatives
    from digitlab.nn import SGD, SoftmaxCrossEntropy, fit, make_schedule

    train = load_mnist("train")
    neg_train, _ = make_negatives(negatives, train.images, seed=seed)
    x = np.concatenate([to_float(train.images), neg_train])
    y = np.concatenate([train.labels, np.full(len(neg_train), 10)])
    x_val, y_val, _ = _validation(seed)
    model = add_reject_class(base)
    opt = SGD(model, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = -(-len(x) // 128)
    history = fit(model, opt, SoftmaxCrossEntropy(), x, y, x_val=x_val, y_val=y_val, epochs=epochs, batch_size=128,
                  seed=seed, schedule=make_schedule("cosine", epochs * steps, steps, 0.2), augment=Augment(),
                  progress=progress, on_epoch=lambda e: log(f"epoch {e.epoch}: val acc {e.val_accuracy:.4f}"))
    report = calibrate(model, seed=seed, max_risk=max_risk)
    report["epochs"] = [vars(e) for e in history.epochs]
    return model, report


def _validation(seed: int):
    from digitlab.data import load_mnist, to_float
    from digitlab.data.negatives import make_negatives

    train, val = load_mnist("train"), load_mnist("val")
    neg_val, kinds = make_negatives(2000, train.images, seed=seed + 1)
    return (np.concatenate([to_float(val.images), neg_val]), np.concatenate([val.labels, np.full(len(neg_val), 10)]),
            kinds)


def calibrate(model: Sequential, seed: int = 0, max_risk: float = 0.02) -> dict:
    """Temperature and threshold from validation digits + negatives (seeded), measured on MNIST test +
    2,000 fresh negatives; written into ``model.meta``. The threshold is the lowest whose validation
    risk is at most ``max_risk``."""
    from digitlab.data import load_mnist, to_float
    from digitlab.data.negatives import KINDS, make_negatives

    x_val, y_val, _ = _validation(seed)
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
    model.meta.update({"temperature": t, "reject_threshold": threshold, "reject_class": 10,
                       "reject_report": report})
    return report
