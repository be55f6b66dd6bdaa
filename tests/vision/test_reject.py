"""Rejection: negatives look like what they claim, temperature scaling calibrates, the risk-coverage
bookkeeping is right, and growing the model keeps its digit outputs."""

import numpy as np
import pytest

from digitlab.data import load_mnist, to_float
from digitlab.data.negatives import KINDS, make_negatives
from digitlab.models import build, cnn_spec
from digitlab.vision.reject import (
    NOT_A_DIGIT,
    add_reject_class,
    choose_threshold,
    digit_decision,
    fit_temperature,
    nll,
    risk_coverage,
    softmax_t,
)


@pytest.fixture(scope="module")
def digits():
    return load_mnist("train").images[:2000]


def test_negatives_are_seeded_normalised_and_of_every_kind(digits):
    a, ka = make_negatives(300, digits, seed=3)
    b, kb = make_negatives(300, digits, seed=3)
    assert np.array_equal(a, b) and np.array_equal(ka, kb)
    assert a.shape == (300, 1, 28, 28) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert set(ka.tolist()) == set(range(len(KINDS)))
    ink = a.reshape(300, -1) > 0.3
    assert ink.any(axis=1).mean() > 0.95  # nearly all carry some ink (a blank box is not a useful negative)
    # normalised like digits: longest side about 20 px
    ys, xs = np.nonzero(a[0, 0] > 0.05)
    assert max(np.ptp(ys), np.ptp(xs)) + 1 <= 22


def test_growing_the_model_keeps_the_digit_logits():
    base = build(cnn_spec(), seed=0)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    grown = add_reject_class(base)
    assert grown.classes[-1] == NOT_A_DIGIT and len(grown.classes) == 11
    assert np.allclose(grown.predict_logits(x)[:, :10], base.predict_logits(x), atol=1e-6)
    with pytest.raises(ValueError):
        add_reject_class(grown)


def test_temperature_scaling_finds_the_temperature_that_made_the_data():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 5))
    true_t = 2.5
    labels = np.array([rng.choice(5, p=p) for p in softmax_t(logits, true_t)])
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(true_t, rel=0.1)
    assert nll(logits, labels, t) <= min(nll(logits, labels, 1.0), nll(logits, labels, 5.0))


def test_risk_coverage_and_threshold():
    # three digits read right with high confidence, one wrong with low, two non-digits
    probs = np.zeros((6, 11))
    probs[0, 3] = probs[1, 4] = probs[2, 5] = 0.95
    probs[3, 7] = 0.55
    probs[4, 10] = 0.9  # a non-digit recognised as such
    probs[5, 1] = 0.6  # a non-digit taken for a 1
    probs[np.arange(6), 10] += 1 - probs.sum(axis=1)
    labels = np.array([3, 4, 5, 2, 10, 10])
    label, conf = digit_decision(probs)
    assert conf[4] == 0 and label[3] == 7
    rows = {r["threshold"]: r for r in risk_coverage(probs, labels, thresholds=np.array([0.0, 0.58, 0.9]))}
    assert rows[0.0]["coverage"] == 1.0 and rows[0.0]["risk"] == pytest.approx(2 / 5)
    assert rows[0.58]["coverage"] == 0.75 and rows[0.58]["risk"] == pytest.approx(1 / 4)
    assert rows[0.9]["risk"] == 0 and rows[0.9]["non_digits_accepted"] == 0
    assert choose_threshold(probs, labels, max_risk=0.0) == pytest.approx(0.61, abs=0.011)


def test_shipped_model_rejects_negatives_and_accepts_digits():
    from digitlab.vision import Recognizer

    rec = Recognizer()
    neg, _ = make_negatives(400, load_mnist("train").images[:3000], seed=99)
    test = load_mnist("test")
    _, conf_neg = digit_decision(rec.probabilities(neg))
    _, conf_dig = digit_decision(rec.probabilities(to_float(test.images[:1000])))
    assert np.mean(conf_neg < rec.threshold) > 0.9
    assert np.mean(conf_dig >= rec.threshold) > 0.99
