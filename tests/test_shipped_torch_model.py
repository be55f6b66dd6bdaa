"""The PyTorch-trained model (`models/digitlab-cnn-torch.npz`): a plain NumPy model file with its card,
at least 99.6 % on MNIST test, and the NumPy engine alone runs it."""

import json
import subprocess
import sys

import numpy as np
import pytest

import digitlab
from digitlab.data import load_mnist, to_float
from digitlab.data.mnist import repo_root

MODEL = repo_root() / "models" / "digitlab-cnn-torch.npz"
CARD = MODEL.with_suffix(".json")
RECIPE = ("digitlab train --backend torch --device cpu --arch cnn --augment --epochs 18 --ema 0.999 "
          "--label-smoothing 0.1 --seed 0 --out models/digitlab-cnn-torch.npz --no-progress --json")

pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason=f"{MODEL.name} not trained yet: {RECIPE}")


def test_card_says_how_it_was_made():
    card = json.loads(CARD.read_text())
    assert card["backend"] == "torch" and card["command"].startswith("digitlab train --backend torch")
    assert card["architecture"] == digitlab.load(MODEL).spec()["layers"] and card["train_seconds"] <= 15 * 60


def test_at_least_99_6_percent_with_numpy_alone():
    code = ("import sys, json, numpy as np, digitlab; from digitlab.data import load_mnist, to_float; "
            f"m = digitlab.load({str(MODEL)!r}); t = load_mnist('test'); "
            "acc = float(np.mean(m.predict(to_float(t.images), batch_size=500) == t.labels)); "
            "assert 'torch' not in sys.modules; print(acc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    acc = float(proc.stdout)
    assert acc >= 0.996
    assert acc == pytest.approx(json.loads(CARD.read_text())["test_accuracy"], abs=2e-4)


def test_loads_as_a_numpy_model():
    model = digitlab.load(MODEL)
    x = to_float(load_mnist("test").images[:100])
    assert model.predict(x).shape == (100,) and np.isfinite(model.predict_logits(x)).all()
