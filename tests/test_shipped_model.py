"""The shipped default model: loads with NumPy alone, carries its card, and is as good as it says."""

import json
import subprocess
import sys

import numpy as np
import pytest

import digitlab
from digitlab.data import load_mnist, to_float
from digitlab.data.mnist import repo_root

MODEL = repo_root() / "models" / "digitlab-cnn.npz"
CARD = MODEL.with_suffix(".json")


@pytest.fixture(scope="module")
def model():
    return digitlab.load(MODEL)


def test_card_describes_the_model(model):
    card = json.loads(CARD.read_text())
    for key in ("architecture", "test_accuracy", "train_seconds", "command", "seed", "augment", "machine"):
        assert key in card, key
    assert card["architecture"] == model.spec()["layers"] and card["augment"] is True
    assert card["command"].startswith("digitlab train --arch cnn")
    assert MODEL.stat().st_size < 5 * 2 ** 20


def test_shipped_model_reaches_its_accuracy_on_mnist_test(model):
    test = load_mnist("test")
    acc = float(np.mean(model.predict(to_float(test.images), batch_size=500) == test.labels))
    assert acc >= 0.995
    assert acc == pytest.approx(json.loads(CARD.read_text())["test_accuracy"], abs=1e-9)


def test_shipped_model_needs_no_torch():
    code = ("import sys, digitlab; from digitlab.data import load_mnist, to_float; "
            f"m = digitlab.load({str(MODEL)!r}); t = load_mnist('test'); "
            "p = m.predict(to_float(t.images[:200])); assert 'torch' not in sys.modules; print((p == t.labels[:200]).mean())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) > 0.97
