"""The shipped models: load with NumPy alone, carry their cards, and are as good as they say.

``models/digitlab-cnn10.npz`` is the issue-3 recipe (10 digit classes); ``models/digitlab-cnn.npz``,
the recogniser's default, is the same network grown an 11th class "not a digit" and calibrated.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

import digitlab
from digitlab.data import load_mnist, to_float
from digitlab.data.mnist import repo_root
from digitlab.vision.reject import digit_decision, softmax_t

MODELS = repo_root() / "models"


@pytest.fixture(scope="module")
def mnist_test():
    test = load_mnist("test")
    return to_float(test.images), test.labels


@pytest.mark.parametrize("name", ["digitlab-cnn10", "digitlab-cnn"])
def test_cards_describe_the_models(name):
    model = digitlab.load(MODELS / f"{name}.npz")
    card = json.loads((MODELS / f"{name}.json").read_text())
    training = card if name == "digitlab-cnn10" else card["base"]  # the 11-class card nests its base run
    for key in ("architecture", "test_accuracy", "machine"):
        assert key in card, key
    for key in ("train_seconds", "command", "seed", "augment"):
        assert key in training, key
    assert card["architecture"] == model.spec()["layers"] and training["augment"] is True
    assert training["command"].startswith("digitlab train --arch cnn")
    assert training["train_seconds"] <= 20 * 60
    assert (MODELS / f"{name}.npz").stat().st_size < 5 * 2 ** 20


def test_ten_class_model_reaches_its_accuracy(mnist_test):
    x, y = mnist_test
    model = digitlab.load(MODELS / "digitlab-cnn10.npz")
    acc = float(np.mean(model.predict(x, batch_size=500) == y))
    assert acc >= 0.995
    assert acc == pytest.approx(json.loads((MODELS / "digitlab-cnn10.json").read_text())["test_accuracy"], abs=1e-9)


def test_default_model_reads_digits_and_knows_non_digits(mnist_test):
    x, y = mnist_test
    model = digitlab.load(MODELS / "digitlab-cnn.npz")
    assert model.classes[-1] == "not a digit" and len(model.classes) == 11
    probs = softmax_t(model.predict_logits(x, batch_size=500), model.meta["temperature"])
    label, conf = digit_decision(probs)
    assert float(np.mean(label == y)) >= 0.995  # the digit it would read
    assert float(np.mean((label == y) & (conf >= model.meta["reject_threshold"]))) >= 0.99  # ... and accept
    card = json.loads((MODELS / "digitlab-cnn.json").read_text())
    assert card["test_accuracy"] == pytest.approx(float(np.mean(label == y)), abs=1e-9)
    assert card["reject"]["negatives_test_rejected_at_threshold"] >= 0.95


def test_shipped_model_needs_no_torch():
    code = ("import sys, digitlab; from digitlab.data import load_mnist, to_float; "
            f"m = digitlab.load({str(MODELS / 'digitlab-cnn.npz')!r}); t = load_mnist('test'); "
            "p = m.predict(to_float(t.images[:200])); assert 'torch' not in sys.modules; "
            "print((p == t.labels[:200]).mean())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) > 0.97
